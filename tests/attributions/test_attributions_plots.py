"""Feature masks, occlusion windows and the attribution pictures (PNG and HTML)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from explainnn.attributions import (
    feature_mask,
    image_mask,
    occlusion_window,
    plot_attribution_grid,
    plot_causal_maps,
    plot_sequence_attributions,
    plot_text_attributions,
    text_html,
)
from explainnn.errors import UserError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_png(path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def digits(n: int = 2, side: int = 32) -> torch.Tensor:
    images = torch.zeros(n, 1, side, side)
    images[:, :, side // 4 : 3 * side // 4, side // 2 - 2 : side // 2 + 2] = 1.0
    return images


def test_patch_masks_scale_with_the_image() -> None:
    groups = image_mask(digits(2, 32))
    assert groups.shape == (2, 1, 32, 32) and groups.dtype == torch.int64
    assert groups.unique().tolist() == list(range(64)), "4x4 patches on 32x32"
    assert (groups[:, :, :4, :4] == 0).all() and (groups[:, :, :4, 4:8] == 1).all()
    assert image_mask(digits(1, 28)).unique().numel() == 49, "28x28 keeps 4x4 patches"
    wide = image_mask(torch.zeros(1, 1, 28, 84))
    assert wide.unique().numel() == 7 * 21
    assert image_mask(digits(1), patch=8).unique().numel() == 16
    rgb = image_mask(torch.rand(1, 3, 32, 32))
    assert torch.equal(rgb[:, 0], rgb[:, 2]), "channels share groups"


def test_slic_masks_are_per_sample_superpixels() -> None:
    images = digits(2)
    images[1] = images[1].transpose(1, 2).clone()
    groups = image_mask(images, "slic", n_segments=16)
    assert groups.shape == images.shape and groups.min() == 0
    assert not torch.equal(groups[0], groups[1])
    with pytest.raises(UserError, match="n_segments must be a positive integer"):
        image_mask(images, "slic", n_segments=0)
    with pytest.raises(UserError, match="unknown image mask 'grid'; valid masks: patches, slic"):
        image_mask(images, "grid")


def test_sequence_and_token_masks() -> None:
    steps = feature_mask(torch.zeros(2, 5, 3), "sequence")
    assert steps.shape == (2, 5, 3) and (steps[:, 3] == 3).all()
    tokens = feature_mask(torch.zeros(2, 6, dtype=torch.int64), "tokens")
    assert tokens[1].tolist() == list(range(6))
    with pytest.raises(UserError, match="unknown modality 'audio'"):
        feature_mask(torch.zeros(2, 3), "audio")


def test_occlusion_windows_suit_the_modality() -> None:
    assert occlusion_window(torch.zeros(1, 1, 32, 32), "image") == ((1, 4, 4), (1, 2, 2))
    assert occlusion_window(torch.zeros(1, 3, 64, 64), "image") == ((3, 8, 8), (3, 4, 4))
    assert occlusion_window(torch.zeros(1, 40, 1), "sequence") == ((1, 1), (1, 1))
    assert occlusion_window(torch.zeros(1, 28, 28), "sequence", window=2) == ((2, 28), (2, 28))
    assert occlusion_window(torch.zeros(1, 16, dtype=torch.int64), "tokens") == ((1,), (1,))
    with pytest.raises(UserError, match="occlusion window 50 is longer than the 40 steps"):
        occlusion_window(torch.zeros(1, 40, 1), "sequence", window=50)
    with pytest.raises(UserError, match="stride must be a positive integer"):
        occlusion_window(torch.zeros(1, 1, 32, 32), "image", stride=0)


def test_attribution_grid_writes_a_png(tmp_path) -> None:
    images = digits(3)
    maps = {"saliency": torch.rand(3, 1, 32, 32).numpy(), "integrated_gradients": np.zeros((3, 1, 32, 32))}
    path = tmp_path / "sub" / "grid.png"
    figure = plot_attribution_grid(images, maps, path, titles={"saliency": "Saliency"},
                                   labels=["label 1", "label 2", "label 3"])
    assert isinstance(figure, Figure) and is_png(path)
    axes = figure.axes
    assert axes[0].get_title() == "input" and axes[1].get_title() == "Saliency"
    limits = axes[1].images[0].get_clim()
    assert limits[0] == -limits[1], "symmetric limits centred at zero"
    with pytest.raises(UserError, match=r"attributions of 'saliency' have shape \(3, 32\)"):
        plot_attribution_grid(images, {"saliency": np.zeros((3, 32))})
    with pytest.raises(UserError, match="2 labels for 3 samples"):
        plot_attribution_grid(images, maps, labels=["a", "b"])
    with pytest.raises(UserError, match="contains NaN"):
        plot_attribution_grid(images, {"x": np.full((3, 1, 32, 32), np.nan)})


def test_sequence_plots_for_signals_and_image_rows(tmp_path) -> None:
    signals = torch.sin(torch.linspace(0, 6, 40)).repeat(2, 1)[..., None]
    path = tmp_path / "signal.png"
    figure = plot_sequence_attributions(signals, {"occlusion": signals.numpy(), "lime": -signals.numpy()}, path)
    assert is_png(path) and len(figure.axes[0].lines) == 1, "the signal is drawn"
    rows = tmp_path / "rows.png"
    plot_sequence_attributions(digits(2, 28), np.random.default_rng(0).normal(size=(2, 1, 28, 28)), rows)
    assert is_png(rows)
    with pytest.raises(UserError, match="inputs must be"):
        plot_sequence_attributions(np.zeros((2, 5)), np.zeros((2, 5)))


def test_text_html_colours_and_escapes() -> None:
    page = text_html(["<b>great</b>", "&", "film"], [0.0, 0.0, 0.9, -0.3, 0.6], title="<script>")
    assert "<b>great</b>" not in page and "&lt;b&gt;great&lt;/b&gt;" in page and "&amp;" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count("<span") == 3 and 'title="+0.9000"' in page, "left-padded scores align to the end"
    assert "rgba(214, 39, 40, 0.850)" in page and "rgba(31, 119, 180" in page
    with pytest.raises(UserError, match="2 scores for 3 tokens"):
        text_html(["a", "b", "c"], [1.0, 2.0])


def test_text_attributions_png(tmp_path) -> None:
    tokens = [["a", "fine", "film"], ["dull"]]
    scores = {"leave_one_out": np.array([[0, 0.1, 0.5, -0.2], [0, 0, 0, 0.7]]),
              "saliency": np.array([[0, 1, 2, 3], [0, 0, 0, 1.0]])}
    path = tmp_path / "text.png"
    plot_text_attributions(tokens, scores, path)
    assert is_png(path)
    with pytest.raises(UserError, match=r"scores of 'x' must be \(2, L\)"):
        plot_text_attributions(tokens, {"x": np.zeros(4)})


@pytest.mark.parametrize("n_units, shown", [(3, "all 3 causal units"), (20, "the first 16 of 20 causal units")])
def test_causal_maps_have_a_title_and_a_colour_bar_on_their_scale(tmp_path, n_units, shown) -> None:
    rng = np.random.default_rng(0)
    maps = {unit: rng.uniform(-1, 1, size=(2, 32, 32)) for unit in range(n_units)}
    path = tmp_path / "causal_maps_conv2.png"
    figure = plot_causal_maps(digits(2), maps, rng.uniform(-1, 1, size=(2, 1, 32, 32)), path, layer="conv2")
    assert is_png(path)
    title = figure.get_suptitle()
    assert title.startswith("Causal maps of layer conv2") and shown in title
    bars = [ax for ax in figure.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and "contribution" in bars[0].get_ylabel()
    assert bars[0].get_ylim() == (-1.0, 1.0)
    columns = 2 + min(n_units, 16)
    assert len(figure.axes) == 2 * columns + 1
    assert [ax.get_title() for ax in figure.axes[:3]] == ["input", "sum of the maps", "conv2:0"]
