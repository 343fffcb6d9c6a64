"""Batched evaluation of many interventions on many samples.

Rows are ``K`` blocks of the ``N`` samples, block ``k`` carrying intervention
``k``. Everything that runs before the first intervened layer is identical to the
clean pass, so it is not recomputed: when ``torch.fx`` traces the model, only the
graph nodes downstream of the intervened layer run (:mod:`.fxsplit`); otherwise
module calls before it return cached clean outputs (tiled over the blocks). The
intervened layer itself is served from its cached output plus per-block edits,
and only the rest of the forward runs on ``K * N`` rows. Blocks are chunked to a
memory budget.
"""

from __future__ import annotations

import functools
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
from torch import nn

from explainnn.errors import InterventionError
from explainnn.interventions.apply import EditPlan, StartCache, is_path_edge
from explainnn.interventions.clean import CleanPass, clean_pass
from explainnn.interventions.edits import path_entries
from explainnn.interventions.fxsplit import GraphSplit
from explainnn.interventions.hooks import ModelPatch
from explainnn.interventions.kinds import kind_of
from explainnn.interventions.layers import (
    HeldClean,
    LayerInfo,
    ModuleCall,
    find_layers,
    is_stateful,
    resolve_layer,
    tile_output,
)
from explainnn.interventions.spec import Intervention, InterventionSet, as_rows

DEFAULT_CPU_BUDGET_MB = 512
DEFAULT_CUDA_BUDGET_MB = 8192
"""Default activation budget of one chunk (on CUDA also at most a quarter of the free memory)."""


@dataclass(frozen=True)
class InterventionResult:
    """Outputs of a run: ``K`` interventions x ``N`` samples x ``C`` classes."""

    logits: torch.Tensor
    target_logit: torch.Tensor
    prob: torch.Tensor
    clean_logits: torch.Tensor
    clean_target_logit: torch.Tensor
    clean_prob: torch.Tensor
    target: torch.Tensor

    @classmethod
    def from_logits(cls, logits: torch.Tensor, clean_logits: torch.Tensor, target: torch.Tensor) -> "InterventionResult":
        index = target.view(1, -1, 1).expand(logits.shape[0], -1, 1)
        return cls(
            logits,
            logits.gather(2, index).squeeze(2),
            torch.softmax(logits, -1).gather(2, index).squeeze(2),
            clean_logits,
            clean_logits.gather(1, target[:, None]).squeeze(1),
            torch.softmax(clean_logits, -1).gather(1, target[:, None]).squeeze(1),
            target,
        )

    def logit_effect(self) -> torch.Tensor:
        """``(K, N)``: intervened minus clean target logit."""
        return self.target_logit - self.clean_target_logit

    def prob_effect(self) -> torch.Tensor:
        """``(K, N)``: intervened minus clean target probability."""
        return self.prob - self.clean_prob

    def kl_divergence(self) -> torch.Tensor:
        """``(K, N)``: ``KL(p_clean || p_intervened)`` over the classes."""
        clean = torch.log_softmax(self.clean_logits, -1)
        inter = torch.log_softmax(self.logits, -1)
        return (clean.exp() * (clean - inter)).sum(-1)

    def accuracy(self, labels: torch.Tensor) -> torch.Tensor:
        """``(K,)``: fraction of samples whose intervened prediction equals ``labels``."""
        labels = torch.as_tensor(labels, device=self.logits.device)
        return (self.logits.argmax(-1) == labels).float().mean(-1)


def _tile(t: torch.Tensor, n_blocks: int, axis: int = 0) -> torch.Tensor:
    """A fresh copy of ``t`` repeated ``n_blocks`` times along ``axis`` (never a view of the cache)."""
    repeats = [1] * t.dim()
    repeats[axis] = n_blocks
    return t.repeat(repeats)


def _tile_output(call: ModuleCall, n_blocks: int) -> Any:
    """Tile a cached module output over the blocks (recurrent outputs keep their batch axes)."""
    return tile_output(call.output, call.module, n_blocks)


class _Stop(Exception):
    """Ends a path pass once the child's input is known."""


def scale_units(layer: LayerInfo, out: Any, factors: torch.Tensor) -> Any:
    """A layer's module output ``(E * N, ...)`` with unit ``u`` of block ``e`` scaled by ``factors[e, u]``."""
    factors = factors.to(device=_first(out).device, dtype=_first(out).dtype)
    return layer.unit_kind.scale_units(layer, out, factors)


def _first(out: Any) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out[0]


def _tileable(call: ModuleCall, n: int) -> bool:
    out = call.output
    if isinstance(out, torch.Tensor):
        return out.dim() > 0 and out.shape[0] == n
    return is_stateful(call.module) and isinstance(out, tuple)


class InterventionRunner:
    """Evaluate ``K`` interventions x ``N`` samples in a few batched forward passes.

    ``memory_budget_mb`` bounds the activations of one chunk of rows (default
    512 MB on CPU; on CUDA 8 GB or a quarter of the free memory). ``reference``
    (a batch of inputs) defines ``mode="mean"``; without it the mean is taken
    over the inputs of each run. The model is evaluated in eval mode and left
    exactly as it was.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[LayerInfo] | None = None,
        memory_budget_mb: float | None = None,
        reference: torch.Tensor | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InterventionError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if memory_budget_mb is not None and (
            isinstance(memory_budget_mb, bool) or not isinstance(memory_budget_mb, (int, float)) or memory_budget_mb <= 0
        ):
            raise InterventionError(f"memory_budget_mb must be a positive number; got {memory_budget_mb!r}")
        self.model = model
        self._layers = None if layers is None else list(layers)
        self.memory_budget_mb = memory_budget_mb
        self._reference = reference
        self._reference_pass: CleanPass | None = None
        self._clean: CleanPass | None = None
        self._fast: dict[str, _Prefix | None] = {}
        self._graph: GraphSplit | Literal[False] | None = None  # None: not traced yet; False: does not trace
        self._graph_ok: dict[str, bool] = {}
        self._region_ok: bool | None = None
        self._noise: float | None = None

    @property
    def device(self) -> torch.device:
        for tensor in self.model.parameters():
            return tensor.device
        return torch.device("cpu")

    def layers(self, example_input: torch.Tensor) -> list[LayerInfo]:
        if self._layers is None:
            self._layers = find_layers(self.model, example_input.to(self.device))
        return self._layers

    def run(
        self,
        inputs: torch.Tensor,
        interventions: Sequence[InterventionSet],
        target: int | torch.Tensor | None = None,
    ) -> InterventionResult:
        """Logits, target logit and probability for every intervention and sample.

        ``target``: a class index, one per sample ``(N,)``, or ``None`` for the
        clean prediction of each sample.
        """
        if not isinstance(inputs, torch.Tensor) or inputs.dim() == 0 or not len(inputs):
            raise InterventionError("inputs must be a non-empty batch tensor (N, ...)")
        rows = as_rows(interventions)
        inputs = inputs.to(self.device)
        layers = self.layers(inputs[:1])
        with ModelPatch() as patch, torch.inference_mode():
            patch.eval_mode(self.model)
            clean = self._clean_pass(inputs)
            if not isinstance(clean.output, torch.Tensor) or clean.output.dim() != 2:
                raise InterventionError("the model must return (N, C) logits to be evaluated by the runner")
            targets = self._targets(target, clean.output)
            logits = self._all_logits(clean, layers, rows)
        return InterventionResult.from_logits(logits, clean.output, targets)

    def _clean_pass(self, inputs: torch.Tensor) -> CleanPass:
        cached = self._clean
        if (
            cached is None
            or cached.inputs.shape != inputs.shape
            or cached.inputs.dtype != inputs.dtype
            or not torch.equal(cached.inputs, inputs)
        ):
            cached = self._clean = clean_pass(self.model, inputs.clone())
            self._graph_ok.clear()
            self._region_ok = None
            self._noise = None
            if isinstance(self._graph, GraphSplit):
                self._graph.reset()
        return cached

    def _means(self, clean: CleanPass):
        if self._reference is None:
            return clean.mean
        if self._reference_pass is None:
            self._reference_pass = clean_pass(self.model, self._reference.to(self.device))
        return self._reference_pass.mean

    @staticmethod
    def _targets(target: int | torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
        n, classes = logits.shape
        if target is None:
            return logits.argmax(-1)
        if isinstance(target, int) and not isinstance(target, bool):
            target = torch.full((n,), target, dtype=torch.long, device=logits.device)
        target = torch.as_tensor(target, device=logits.device)
        if target.dim() == 0:
            target = target.expand(n)
        if target.shape != (n,) or target.is_floating_point():
            raise InterventionError(f"target must be a class index or {n} class indices; got shape {tuple(target.shape)}")
        if target.min() < 0 or target.max() >= classes:
            raise InterventionError(f"target classes must be in 0..{classes - 1}; got {target.tolist()}")
        return target.long()

    def _all_logits(self, clean: CleanPass, layers: list[LayerInfo], rows: list[tuple[Intervention, ...]]) -> torch.Tensor:
        n = clean.inputs.shape[0]
        groups: dict[str, list[int]] = {}
        for index, specs in enumerate(rows):
            earliest = min((resolve_layer(layers, self.model, s.layer) for s in specs), key=lambda info: info.order)
            groups.setdefault(earliest.module_name, []).append(index)
        logits = torch.empty(len(rows), n, clean.output.shape[1], dtype=clean.output.dtype, device=clean.output.device)
        means = self._means(clean)
        budget = self._budget_bytes()
        chunks = []
        for module_name, indices in groups.items():
            path = any(is_path_edge(resolve_layer(layers, self.model, s.layer), s) for i in indices for s in rows[i])
            per_chunk = self._blocks_per_chunk(clean, module_name, budget, path)
            for first in range(0, len(indices), per_chunk):
                chunk = indices[first : first + per_chunk]
                plan = EditPlan(self.model, layers, [rows[i] for i in chunk], means)
                for layer in list(plan.layers.values()):
                    path_rows = plan.path_rows(layer)
                    if path_rows:
                        plan.path_changes[layer.name] = self._path_change(clean, layers, layer, path_rows)
                start = clean.call(plan.start().module_name)
                graph = self._split(clean, start)
                if graph is not None:
                    _put(logits, chunk, self._graph_forward(clean, plan, len(chunk), start, graph))
                    continue
                prefix = self._prefix(clean, start)
                out = self._forward(clean, plan, len(chunk), prefix, start)
                _put(logits, chunk, out)
                if prefix is not None:
                    chunks.append((chunk, plan, start, prefix, torch.isnan(out).any()))
        self._redo_leaks(clean, logits, chunks)
        return logits

    def _redo_leaks(self, clean: CleanPass, logits: torch.Tensor, chunks: list) -> None:
        """Recompute, with every cached output real, chunks where a placeholder leaked NaN.

        A placeholder can only be read under an intervention that changes control
        or data flow after the first intervened layer; checking once at the end
        keeps the device from waiting after every chunk.
        """
        if not chunks or bool(torch.isnan(clean.output).any()):
            return
        if not bool(torch.stack([leak for *_, leak in chunks]).any()):
            return
        for chunk, plan, start, prefix, leak in chunks:
            if bool(leak):
                everything = _Prefix(prefix.calls, set(range(len(prefix.calls))), True)
                self._fast[start.name] = everything
                _put(logits, chunk, self._forward(clean, plan, len(chunk), everything, start))

    def _path_change(self, clean: CleanPass, layers: list[LayerInfo], child: LayerInfo, rows: list) -> torch.Tensor:
        """``(E * N, ...)``: how the child's input changes under each block's path edges.

        One forward over ``E * N`` rows in which every layer returns its clean
        output, except that the parent units of each entry are scaled by the edge
        values: only the weight-free paths from them into the child carry the
        change. The pass stops at the child.
        """
        entries = path_entries(child, rows)
        by_name = {layer.name: layer for layer in layers}
        edits = {}
        for parent_name in {name for entry in entries for name in entry.factors}:
            parent = by_name[parent_name]
            factors = torch.ones(len(entries), parent.n_units, dtype=torch.float64)
            for e, entry in enumerate(entries):
                for unit, value in entry.factors.get(parent_name, {}).items():
                    factors[e, unit] = value
            edits[parent.module_name] = lambda out, parent=parent, factors=factors: scale_units(parent, out, factors)
        clean_input = clean.call(child.module_name).args[0]
        graph = self._region_graph(clean, layers)
        if graph is not None:
            roots = {name: edit(tile_output(clean.call(name).output, clean.call(name).module, len(entries)))
                     for name, edit in edits.items()}
            blockers = {layer.module_name for layer in layers} - set(roots)
            captured = graph.region(roots, blockers, clean.inputs, len(entries), {child.module_name})
            if child.module_name in captured:
                return captured[child.module_name] - _tile(clean_input, len(entries))
        seen: list[torch.Tensor] = []

        def stop(module: nn.Module, args: tuple) -> None:
            seen.append(args[0])
            raise _Stop

        with ModelPatch() as patch:
            HeldClean(clean.by_name, layers).install(patch, len(entries), edits)
            patch.forward_pre_hook(child.module, stop)
            try:
                self.model(_tile(clean.inputs, len(entries)))
            except _Stop:
                pass
        if not seen:
            raise InterventionError(f"layer '{child.name}' did not run in the path pass")
        return seen[0] - _tile(clean_input, len(entries))

    def _region_graph(self, clean: CleanPass, layers: list[LayerInfo]) -> GraphSplit | None:
        """The fx graph for path passes: it must trace, call every layer once and reproduce the clean output."""
        if self._graph is None:
            self._graph = GraphSplit.trace(self.model) or False
        if not self._graph:
            return None
        if self._region_ok is None:
            self._region_ok = all(self._graph.start_node(layer.module_name) is not None for layer in layers) \
                and self._graph.reproduces(clean.inputs)
        return self._graph if self._region_ok else None

    def _blocks_per_chunk(self, clean: CleanPass, module_name: str, budget: float, path: bool = False) -> int:
        n = clean.inputs.shape[0]
        start = clean.call(module_name)
        per_row = clean.inputs[0].numel() * clean.inputs.element_size()
        for call in clean.calls:
            if call.end > start.start or path:
                per_row += _nbytes(call.output) // n
        kind = kind_of(start.module)
        if kind is not None:
            per_row += kind.cache_bytes_per_row(clean, start)
        return max(1, int(budget // (2 * per_row * n)))

    def _budget_bytes(self) -> float:
        if self.memory_budget_mb is not None:
            return self.memory_budget_mb * 2**20
        device = self.device
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            return min(free / 4, DEFAULT_CUDA_BUDGET_MB * 2**20)
        return DEFAULT_CPU_BUDGET_MB * 2**20

    def _substitutes(self, clean: CleanPass, start: ModuleCall) -> list[ModuleCall]:
        """The outermost module calls that finish before ``start`` and can be served from the cache."""
        counts = Counter(call.name for call in clean.calls)
        n = clean.inputs.shape[0]
        chosen, covered_until = [], -1
        for call in clean.calls:
            if call.start < covered_until or call.end >= start.start:
                continue
            if counts[call.name] == 1 and _tileable(call, n):
                chosen.append(call)
                covered_until = call.end
        return chosen

    def _forward(self, clean: CleanPass, plan: EditPlan | None, n_blocks: int, prefix: "_Prefix | None",
                 start: ModuleCall) -> torch.Tensor:
        """One forward over ``n_blocks * N`` rows; ``plan=None`` serves ``start`` clean (for checks)."""
        with ModelPatch() as patch:
            if prefix is None or prefix.input_live:
                inputs = _tile(clean.inputs, n_blocks)
            else:
                inputs = _nan_like(clean.inputs, n_blocks)
            if prefix is not None:
                for index, call in enumerate(prefix.calls):
                    live = index in prefix.live
                    patch.replace_forward(call.module, _cached(call, n_blocks) if live else _placeholder(call, n_blocks))
            if plan is None:
                patch.replace_forward(start.module, _cached_calls(clean.by_name[start.name], n_blocks))
            else:
                plan.install(patch, self._start_cache(clean, start) if prefix is not None else None)
            out = self.model(inputs)
        if not isinstance(out, torch.Tensor) or out.shape != (n_blocks * clean.inputs.shape[0], clean.output.shape[1]):
            raise InterventionError("the model's output under interventions is not (rows, C) logits")
        return out.view(n_blocks, -1, out.shape[-1])

    def _split(self, clean: CleanPass, start: ModuleCall) -> GraphSplit | None:
        """The fx graph split for runs starting at ``start``, when it traces and reproduces the model."""
        if self._graph is None:
            self._graph = GraphSplit.trace(self.model) or False
        if not self._graph or self._graph.start_node(start.name) is None:
            return None
        if start.name not in self._graph_ok:
            try:
                out = self._graph_forward(clean, None, 2, start, self._graph)
                self._graph_ok[start.name] = _close(out, clean.output, self._batch_noise(clean))
            except Exception:  # noqa: BLE001 - a graph that cannot run this way keeps the hook path
                self._graph_ok[start.name] = False
        return self._graph if self._graph_ok[start.name] else None

    def _graph_forward(self, clean: CleanPass, plan: EditPlan | None, n_blocks: int, start: ModuleCall,
                       graph: GraphSplit) -> torch.Tensor:
        """One run over ``n_blocks * N`` rows of only the graph downstream of ``start``."""
        with ModelPatch() as patch:
            if plan is None:
                patch.replace_forward(start.module, _cached_calls(clean.by_name[start.name], n_blocks))
            else:
                plan.install(patch, self._start_cache(clean, start))
            out = graph.run(start.name, clean.inputs, n_blocks)
        if not isinstance(out, torch.Tensor) or out.shape != (n_blocks * clean.inputs.shape[0], clean.output.shape[1]):
            raise InterventionError("the model's output under interventions is not (rows, C) logits")
        return out.view(n_blocks, -1, out.shape[-1])

    @staticmethod
    def _start_cache(clean: CleanPass, start: ModuleCall) -> StartCache:
        kind = kind_of(start.module)
        assert kind is not None, f"module '{start.name}' has no unit kind"
        return kind.start_cache(clean, start)

    def _reproduces(self, clean: CleanPass, start: ModuleCall, prefix: "_Prefix") -> bool:
        try:
            out = self._forward(clean, None, 2, prefix, start)
        except Exception:  # noqa: BLE001 - a placeholder the forward cannot take means "not this way"
            return False
        return _close(out, clean.output, self._batch_noise(clean))

    def _batch_noise(self, clean: CleanPass) -> float:
        """How far the model's own output moves when the same samples run two blocks at a time.

        0 on CPU. On CUDA, kernels chosen by batch size (and TF32) make a ``2N``-row
        forward differ slightly from the ``N``-row clean one; the reuse checks allow
        twice that much, so exact reuse is not rejected for rounding alone. Measured
        once per clean pass.
        """
        if self._noise is None:
            self._noise = 0.0
            if clean.output.device.type != "cpu":
                tiled = clean.inputs.repeat(2, *([1] * (clean.inputs.dim() - 1)))
                out = self.model(tiled)
                if isinstance(out, torch.Tensor) and out.shape[0] == tiled.shape[0]:
                    self._noise = float((out.view(2, *clean.output.shape) - clean.output).abs().max())
        return self._noise

    def _prefix(self, clean: CleanPass, start: ModuleCall) -> "_Prefix | None":
        """How to serve everything before ``start``, checked once per start module.

        Cached outputs that nothing after ``start`` reads become free NaN
        placeholders (so a wrong guess shows up as NaN); the rest are tiled copies.
        Tried in order: nothing live (the start layer reads only its own cache);
        only the last call live; live calls found by probing each one; everything
        live; no reuse at all (full forward passes).
        """
        if start.name in self._fast:
            return self._fast[start.name]
        calls = self._substitutes(clean, start)
        everything = set(range(len(calls)))

        def candidates():
            yield _Prefix(calls, set(), False)
            if calls:
                yield _Prefix(calls, {len(calls) - 1}, False)
            probed = {i for i in everything if not self._reproduces(clean, start, _Prefix(calls, everything - {i}, True))}
            yield _Prefix(calls, probed, not self._reproduces(clean, start, _Prefix(calls, everything, False)))
            yield _Prefix(calls, everything, True)

        chosen = next((p for p in candidates() if self._reproduces(clean, start, p)), None)
        if chosen is None:
            warnings.warn(
                f"reusing cached activations before '{start.name}' does not reproduce the model's "
                "output; running full forward passes for interventions there (exact, slower)",
                stacklevel=4,
            )
        self._fast[start.name] = chosen
        return chosen

def _close(out: torch.Tensor, clean_output: torch.Tensor, noise: float = 0.0) -> bool:
    """Whether every block of ``out`` ``(K, N, C)`` reproduces the clean output (``noise``: see ``_batch_noise``)."""
    expected = clean_output.unsqueeze(0).expand_as(out)
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    return bool(torch.allclose(out, expected, rtol=1e-4, atol=1e-5 * scale + 2 * noise))


@dataclass
class _Prefix:
    """Module calls before the first intervened one, and which of them must be real (tiled) copies."""

    calls: list[ModuleCall]
    live: set[int]
    input_live: bool


def _nan_like(t: torch.Tensor, n_blocks: int) -> torch.Tensor:
    """A free stride-0 stand-in of ``t`` tiled ``n_blocks`` times; NaN where possible, so misuse shows."""
    if not t.is_floating_point():
        return _tile(t, n_blocks)
    return _nan(t.dtype, t.device).expand(n_blocks * t.shape[0], *t.shape[1:])


@functools.lru_cache(maxsize=16)
def _nan(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    with torch.inference_mode():
        return torch.full((), float("nan"), dtype=dtype, device=device)


def _placeholder(call: ModuleCall, n_blocks: int):
    def forward(*args: object, **kwargs: object) -> Any:
        out = call.output
        if isinstance(out, torch.Tensor):
            return _nan_like(out, n_blocks)
        return _tile_output(call, n_blocks)

    return forward


def _put(logits: torch.Tensor, rows: list[int], out: torch.Tensor) -> None:
    if rows == list(range(rows[0], rows[0] + len(rows))):
        logits[rows[0] : rows[0] + len(rows)] = out
    else:
        logits[rows] = out


def _cached_calls(calls: list[ModuleCall], n_blocks: int):
    """A forward serving a module's clean calls in order (a cell called once per step returns each step's output)."""
    count = [0]

    def forward(*args: object, **kwargs: object) -> Any:
        call = calls[min(count[0], len(calls) - 1)]
        count[0] += 1
        return _tile_output(call, n_blocks)

    return forward


def _cached(call: ModuleCall, n_blocks: int):
    def forward(*args: object, **kwargs: object) -> Any:
        return _tile_output(call, n_blocks)

    return forward


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(item) for item in value)
    return 0
