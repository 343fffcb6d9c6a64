"""Speed of the intervention engine against the naive loop, captum and a plain forward.

For LeNet (32x32 inputs) and an LSTM reading 28 image rows, with N samples:

* edge sweep: every unit of each layer's parent as one intervention cutting all
  its edges into that layer (the top-down discovery step; for recurrent layers
  also every recurrent parent), timed for (a) the naive per-sample weight-edit
  loop (``reference_run``, the research code's method; timed on every
  ``--naive-every``-th intervention and scaled, since each costs the same),
  (c) ``InterventionRunner`` and (d) one plain batched forward over the same
  number of rows;
* node sweep: zero-ablating every unit of the analysed layers, timed for
  (b) captum's ``LayerFeatureAblation`` with all perturbations of a layer in one
  batch, (c) ours and (d). For the LSTM the ablated units are the last hidden
  state (what captum can ablate at the ``fc`` input); ours propagates through the
  recurrence, so a node at the last step is the same intervention.

Every timed result of ours is checked against (a) or (b) before it is reported.

    python benchmarks/bench_interventions.py [--samples 100] [--device cpu|cuda] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Callable

import torch
from captum.attr import LayerFeatureAblation

from explainnn.interventions import (
    EdgeIntervention,
    InterventionRunner,
    NodeIntervention,
    find_layers,
    reference_run,
)
from explainnn.models import LeNet, RecurrentClassifier


def timed(fn: Callable[[], object], device: torch.device, repeat: int = 1) -> tuple[float, object]:
    """Best wall time of ``repeat`` runs after one untimed warm-up run (none when ``repeat`` is 1)."""
    best, result = float("inf"), None
    if repeat > 1:
        fn()
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def edge_sweep(model, example) -> list[EdgeIntervention]:
    specs = []
    for layer in find_layers(model, example):
        if layer.parent_map is None:
            continue
        specs += [EdgeIntervention(layer.name, p) for p in range(layer.parent_units)]
        if layer.recurrent:
            specs += [EdgeIntervention(layer.name, p, recurrent=True) for p in range(layer.n_units)]
    return specs


def plain_forward(model, inputs, n_rows: int) -> Callable[[], object]:
    rows = inputs.repeat(n_rows // len(inputs), *([1] * (inputs.dim() - 1)))

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return model(rows)

    return run


def captum_nodes(model, inputs, target, sweeps: list[tuple[torch.nn.Module, bool, tuple]]) -> Callable[[], list]:
    """One ``LayerFeatureAblation`` per layer, every feature group ablated in one batch."""

    def run() -> list:
        out = []
        with torch.no_grad():
            for module, to_input, mask in sweeps:
                ablation = LayerFeatureAblation(model, module)
                attr = ablation.attribute(
                    inputs,
                    target=target,
                    layer_mask=mask,
                    attribute_to_layer_input=to_input,
                    perturbations_per_eval=int(mask.max()) + 1,
                )
                out.append(attr)
        return out

    return run


def bench_model(label, model, inputs, node_specs, captum_sweeps, device, repeat, naive_every) -> list[dict]:
    model = model.to(device).eval()
    inputs = inputs.to(device)
    runner = InterventionRunner(model)
    target = int(runner.run(inputs, node_specs[:1]).clean_logits.argmax(-1).mode().values)
    rows = []

    edges = edge_sweep(model, inputs[:1])
    subset = edges[::naive_every]
    naive_s, naive = timed(lambda: reference_run(model, inputs, subset, target), device)
    naive_s *= len(edges) / len(subset)
    ours_s, ours = timed(lambda: runner.run(inputs, edges, target), device, repeat)
    plain_s, _ = timed(plain_forward(model, inputs, len(edges) * len(inputs)), device, repeat)
    err = float((ours.logits[::naive_every] - naive.logits).abs().max())
    rows.append(dict(model=label, sweep=f"edges ({len(edges)} x {len(inputs)})", other="(a) naive loop",
                     other_s=naive_s, ours_s=ours_s, plain_s=plain_s, max_abs_diff=err))

    captum_s, attrs = timed(captum_nodes(model, inputs, target, captum_sweeps), device, repeat)
    ours_s, ours = timed(lambda: runner.run(inputs, node_specs, target), device, repeat)
    plain_s, _ = timed(plain_forward(model, inputs, len(node_specs) * len(inputs)), device, repeat)
    captum_effect = torch.cat([a.flatten(2) if a.dim() > 2 else a for a in _per_unit(attrs, captum_sweeps)], 1)
    err = float((captum_effect.T - (-ours.logit_effect())).abs().max())
    rows.append(dict(model=label, sweep=f"nodes ({len(node_specs)} x {len(inputs)})", other="(b) captum",
                     other_s=captum_s, ours_s=ours_s, plain_s=plain_s, max_abs_diff=err))
    return rows


def _per_unit(attrs: list[torch.Tensor], sweeps) -> list[torch.Tensor]:
    """captum spreads one group's effect over its features; take one feature per group."""
    out = []
    for attr, (_, _, mask) in zip(attrs, sweeps):
        flat_mask = mask.flatten()
        first = torch.stack([torch.nonzero(flat_mask == g)[0, 0] for g in range(int(mask.max()) + 1)])
        out.append(attr.flatten(1)[:, first])
    return out


def lenet_case(n: int, seed: int):
    torch.manual_seed(seed)
    model = LeNet(1, 32, 10)
    inputs = torch.rand(n, 1, 32, 32)
    nodes = [NodeIntervention(name, j) for name, units in (("conv2", 16), ("fc1", 120), ("fc2", 84)) for j in range(units)]
    conv_mask = torch.arange(16).view(1, 16, 1, 1).expand(1, 16, 10, 10)
    sweeps = [(model.conv2, False, conv_mask), (model.fc1, False, torch.arange(120).view(1, 120)),
              (model.fc2, False, torch.arange(84).view(1, 84))]
    return model, inputs, nodes, sweeps


def lstm_case(n: int, seed: int):
    torch.manual_seed(seed)
    model = RecurrentClassifier("lstm", 28, 10, hidden_size=128)
    inputs = torch.rand(n, 1, 28, 28)
    nodes = [NodeIntervention("lstm", j, steps=-1) for j in range(128)]
    sweeps = [(model.fc, True, torch.arange(128).view(1, 128))]
    return model, inputs, nodes, sweeps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs (not for the naive loop)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--naive-every", type=int, default=10,
                        help="time the naive loop on every n-th edge intervention and scale to all")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for label, case in (("LeNet", lenet_case), ("LSTM (28 rows)", lstm_case)):
        model, inputs, nodes, sweeps = case(args.samples, args.seed)
        rows += bench_model(label, model, inputs, nodes, sweeps, device, args.repeat, args.naive_every)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}, torch {torch.__version__}, CPU threads: {torch.get_num_threads()}, samples: {args.samples}")
    header = f"{'model':<15} {'sweep':<20} {'baseline':<15} {'baseline s':>10} {'ours s':>8} {'plain s':>8} {'x faster':>9} {'ours/plain':>10} {'max |diff|':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<15} {r['sweep']:<20} {r['other']:<15} {r['other_s']:>10.3f} {r['ours_s']:>8.3f} "
              f"{r['plain_s']:>8.3f} {r['other_s'] / r['ours_s']:>9.1f} {r['ours_s'] / r['plain_s']:>10.2f} "
              f"{r['max_abs_diff']:>10.2e}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(dict(device=name, torch=torch.__version__, rows=rows), handle, indent=2)


if __name__ == "__main__":
    main()
