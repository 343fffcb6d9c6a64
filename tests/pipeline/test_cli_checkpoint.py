"""The command line never overwrites a checkpoint trained for another model, and its advice is safe to follow."""

from __future__ import annotations

from pathlib import Path

import yaml

from explainnn.checkpoint import read_checkpoint

QUIET = ["progress=false", "discovery.enabled=false", "circuit.enabled=false", "attribution.enabled=false",
         "evaluation.enabled=false", "analyses.views.enabled=false", "analyses.clustering.enabled=false",
         "report=false", "plots.enabled=false", "device=cpu", "data.name=digits", "training.epochs=1",
         "output_dir=out"]
LSTM = ["model.name=lstm", "model.params={hidden_size: 8}"]


def _main(args, cwd, monkeypatch, capsys):
    from explainnn.main import main, no_config_notice

    monkeypatch.chdir(cwd)
    code = main([*QUIET, *args])
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line != no_config_notice()]


def test_a_lenet_run_with_always_leaves_an_lstm_checkpoint_byte_identical(tmp_path, monkeypatch, capsys):
    code, _, err = _main([*LSTM, "model.checkpoint=lstm.pt"], tmp_path, monkeypatch, capsys)
    assert code == 0, err
    lstm = tmp_path / "lstm.pt"
    before = lstm.read_bytes()

    # the error for the mismatch advises a safe option, not training.train: always
    code, _, err = _main(["model.checkpoint=lstm.pt"], tmp_path, monkeypatch, capsys)
    assert code == 2 and len(err) == 1 and "lstm.pt was trained for model 'lstm'" in err[0]
    assert "set model.checkpoint to a new file" in err[0] and "always" not in err[0]

    # following the old advice anyway: the LeNet goes to its own path, and the run says which
    code, out, err = _main(["model.checkpoint=lstm.pt", "training.train=always"], tmp_path, monkeypatch, capsys)
    assert code == 0, err
    assert lstm.read_bytes() == before
    own = Path("out") / "digits" / "lenet" / "model.pt"
    assert f"note        lstm.pt holds the checkpoint of model 'lstm' on 'digits' and is left as it is; this model " \
           f"was written to {own}" in out
    assert f"model       lenet: trained {own} " in out
    assert read_checkpoint(tmp_path / own)["metadata"]["model"]["name"] == "lenet"
    resolved = yaml.safe_load((tmp_path / "out" / "digits" / "lenet" / "config.yaml").read_text())
    assert resolved["model"]["checkpoint"] == str(own)

    # with the model's own path holding this LeNet, the next such run retrains it there
    code, out, _ = _main(["model.checkpoint=lstm.pt", "training.train=always"], tmp_path, monkeypatch, capsys)
    assert code == 0 and f"trained {own} " in out and lstm.read_bytes() == before


def test_always_stops_in_one_line_when_no_path_is_safe(tmp_path, monkeypatch, capsys):
    """The default path holding an LSTM of another size: one line naming it and both sizes, exit 2, nothing
    trained or written."""
    code, _, err = _main(LSTM, tmp_path, monkeypatch, capsys)
    assert code == 0, err
    checkpoint = tmp_path / "out" / "digits" / "lstm" / "model.pt"
    before = checkpoint.read_bytes()
    files = sorted((tmp_path / "out").rglob("*"))
    code, out, err = _main(["model.name=lstm", "model.params={hidden_size: 6}", "training.train=always"], tmp_path,
                           monkeypatch, capsys)
    assert code == 2 and err == [
        f"explainnn: error: training 'lstm' on 'digits' would overwrite {Path('out/digits/lstm/model.pt')}, which "
        "holds the checkpoint of model 'lstm' (hidden_size=8) on 'digits'; set model.checkpoint to a new file to "
        "train this model there, or delete this one"]
    assert "model " not in out
    assert checkpoint.read_bytes() == before and sorted((tmp_path / "out").rglob("*")) == files


def test_a_seed_model_goes_to_its_own_seeded_path(tmp_path, monkeypatch, capsys):
    """The models of other training seeds (stability and clustering across seeds) follow the same rule: next to
    ``model.checkpoint`` as ``<stem>_seed<k>.pt``, or, where that holds another model, ``model_seed<k>.pt`` in the
    run folder."""
    from explainnn import Run
    from explainnn.config import build_config
    from explainnn.pipeline.model import train_or_load_model

    monkeypatch.chdir(tmp_path)
    code, _, err = _main([*LSTM, "model.checkpoint=lstm.pt", "seed=1"], tmp_path, monkeypatch, capsys)
    assert code == 0, err
    (tmp_path / "lstm.pt").rename(tmp_path / "lstm_seed1.pt")
    before = (tmp_path / "lstm_seed1.pt").read_bytes()
    run = Run(build_config(overrides=[*QUIET, "model.checkpoint=lstm.pt", "training.train=always"]))
    run.run("data")
    train_or_load_model(run.context, run.config.model, seed=1)
    out = capsys.readouterr().out
    own = Path("out") / "digits" / "lenet" / "model_seed1.pt"
    assert f"lstm_seed1.pt holds the checkpoint of model 'lstm' on 'digits' and is left as it is; this model was " \
           f"written to {own}" in out
    assert (tmp_path / "lstm_seed1.pt").read_bytes() == before
    assert read_checkpoint(tmp_path / own)["metadata"]["config_hash"] == "seed 1"
    assert run.context.config.model.checkpoint == "lstm.pt"  # the run's own model is untouched
