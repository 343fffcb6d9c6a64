"""Prefix reuse by splitting the model's ``torch.fx`` graph at the first intervened layer.

Hooks can only replace whole module calls, so functional operations (``F.relu``,
``view``) and modules called more than once (one ``MaxPool2d`` used twice) before
the intervened layer would otherwise run again on every batched row. With the
traced graph, only the nodes that depend on the intervened layer's output run on
the ``K * N`` rows; every other value the run needs (the *frontier*) comes from a
clean pass over the ``N`` samples, tiled over the blocks. :meth:`GraphSplit.region`
runs only the weight-free region downstream of some modules, up to the next
weight layers (the NaN probe of the layer DAG and the path passes of path edges
need nothing more). Models that ``torch.fx.symbolic_trace`` cannot trace keep the
hook path.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from explainnn.interventions.hooks import no_fast_path
from explainnn.interventions.kinds import kind_of
from explainnn.interventions.layers import tile_output


class GraphSplit:
    """The traced graph of a model, able to run only the part downstream of one module call."""

    def __init__(self, model: nn.Module, graph_module: fx.GraphModule) -> None:
        self.model = model
        self.graph_module = graph_module
        self.nodes = list(graph_module.graph.nodes)
        self._batch = self._downstream([n for n in self.nodes if n.op == "placeholder"])
        self._frontiers: dict[Any, tuple[set[fx.Node], dict[fx.Node, Any]]] = {}

    @classmethod
    def trace(cls, model: nn.Module) -> "GraphSplit | None":
        """The split of ``model``, or ``None`` when symbolic tracing fails (the hook path is used then).

        The traced graph is kept per model while its structure stays the same
        (the same module, parameter and buffer objects, training flags and
        forward), so repeated discoveries on one model trace it once; every call
        returns a new split with its own clean frontiers.
        """
        signature = _structure(model)
        cached = _TRACED.get(model)
        if cached is not None and cached[0] == signature:
            traced = cached[1]
        else:
            traced = _symbolic_trace(model)
            _TRACED[model] = (signature, traced)
        return None if traced is None else cls(model, traced)

    def start_node(self, module_name: str) -> fx.Node | None:
        found = [n for n in self.nodes if n.op == "call_module" and n.target == module_name]
        return found[0] if len(found) == 1 else None

    def _node_of(self, module_name: str) -> fx.Node:
        """The single node of a module that the caller has checked with :meth:`start_node`."""
        node = self.start_node(module_name)
        assert node is not None, f"module '{module_name}' is not called exactly once in the traced graph"
        return node

    def _downstream(self, roots: list[fx.Node]) -> set[fx.Node]:
        live = set(roots)
        for node in self.nodes:
            if node not in live and any(arg in live for arg in node.all_input_nodes):
                live.add(node)
        return live

    def region(self, roots: dict[str, Any], blockers: set[str], inputs: torch.Tensor, n_blocks: int,
               capture: set[str], whole: bool = False) -> dict[str, Any]:
        """First arguments of the ``capture`` modules when the ``roots`` modules output the given values.

        ``roots`` maps module names to their outputs on ``n_blocks * N`` rows;
        propagation stops at the ``blockers`` modules, whose outputs stay clean.
        Only the nodes in between run; capture modules that the roots do not reach
        are left out of the result. With ``whole`` a captured value is the call's
        ``(args, kwargs)`` (an attention module's query, key and value).
        """
        root_nodes = {self._node_of(name): value for name, value in roots.items()}
        live, reached = set(root_nodes), set()
        for node in self.nodes:
            if node in live or node.op == "output":
                continue
            if any(arg in live for arg in node.all_input_nodes):
                if node.op == "call_module" and node.target in blockers:
                    reached.add(node)
                else:
                    live.add(node)
        key = ("region", tuple(sorted(roots)), len(inputs))
        if key not in self._frontiers:
            needed = {arg for n in (live - set(root_nodes)) | reached for arg in n.all_input_nodes if arg not in live}
            self._frontiers[key] = (live, self._clean_values(needed, inputs))
        values = self._frontiers[key][1]
        n = inputs.shape[0]
        env: dict[fx.Node, Any] = dict(root_nodes)
        captured: dict[str, Any] = {}
        for node in self.nodes:
            if node in reached and node.target in capture and node.target not in captured and node.args \
                    and any(arg in live for arg in node.all_input_nodes):
                if whole:
                    def value(arg: fx.Node) -> Any:
                        if arg not in env:
                            env[arg] = self._tiled(arg, values[arg], n, n_blocks)
                        return env[arg]

                    captured[node.target] = (fx.graph.map_arg(node.args, value), fx.graph.map_arg(node.kwargs, value))
                elif node.args[0] in live:
                    captured[node.target] = env[node.args[0]]
            if node not in live or node in root_nodes:
                continue
            for arg in node.all_input_nodes:
                if arg not in env:
                    env[arg] = self._tiled(arg, values[arg], n, n_blocks)
            env[node] = self._run_node(node, env, inputs)
        return captured

    def _clean_values(self, needed: set[fx.Node], inputs: torch.Tensor) -> dict[fx.Node, Any]:
        """Clean values of the ``needed`` nodes (one clean interpretation of the graph, up to the last needed node)."""
        values: dict[fx.Node, Any] = {}
        env: dict[fx.Node, Any] = {}
        last = max((self.nodes.index(node) for node in needed), default=-1)
        with torch.inference_mode():
            for node in self.nodes[: last + 1]:
                env[node] = self._run_node(node, env, inputs)
                if node in needed:
                    values[node] = _clone(env[node])
        return values

    def reproduces(self, inputs: torch.Tensor) -> bool:
        """Whether interpreting the traced graph gives the model's own output on ``inputs``."""
        try:
            with torch.inference_mode():
                env: dict[fx.Node, Any] = {}
                for node in self.nodes:
                    if node.op == "output":
                        out = fx.graph.map_arg(node.args[0], lambda a: env[a])
                        break
                    env[node] = self._run_node(node, env, inputs)
                expected = self.model(inputs)
            return isinstance(out, torch.Tensor) and out.shape == expected.shape and bool(
                torch.allclose(out, expected, rtol=1e-4, atol=1e-5, equal_nan=True))
        except Exception:  # noqa: BLE001 - a graph that cannot run on its own is not used
            return False

    def reset(self) -> None:
        """Forget the clean frontiers (the clean inputs changed)."""
        self._frontiers.clear()

    def _frontier(self, module_name: str, inputs: torch.Tensor) -> tuple[set[fx.Node], dict[fx.Node, Any]]:
        """Nodes to run for a start module, and clean values of the other nodes they read."""
        if module_name not in self._frontiers:
            start = self._node_of(module_name)
            live = self._downstream([start])
            needed = {arg for n in live if n is not start for arg in n.all_input_nodes if arg not in live}
            self._frontiers[module_name] = (live, self._clean_values(needed, inputs))
        return self._frontiers[module_name]

    def run(self, module_name: str, inputs: torch.Tensor, n_blocks: int) -> Any:
        """The model's output on ``n_blocks * N`` rows, running only the nodes from ``module_name`` on.

        The start module is called with placeholder arguments: it must be
        patched to produce its (edited) output on its own.
        """
        live, values = self._frontier(module_name, inputs)
        n = inputs.shape[0]
        start = self._node_of(module_name)
        env: dict[fx.Node, Any] = {}
        for node in self.nodes:
            if node.op == "output":
                return fx.graph.map_arg(node.args[0], lambda a: env[a])
            if node not in live:
                continue
            if node is start:
                env[node] = self.graph_module.get_submodule(_name(node.target))()
                continue
            for arg in node.all_input_nodes:
                if arg not in env:
                    env[arg] = self._tiled(arg, values[arg], n, n_blocks)
            env[node] = self._run_node(node, env, inputs)
        raise RuntimeError("the traced graph has no output")

    def _tiled(self, node: fx.Node, value: Any, n: int, n_blocks: int) -> Any:
        if node not in self._batch:
            return value
        if node.op == "call_module":
            module = self.graph_module.get_submodule(_name(node.target))
            if kind_of(module) is not None and not isinstance(value, torch.Tensor):
                return tile_output(value, module, n_blocks)
        return _tile_batch(value, n, n_blocks)

    def _run_node(self, node: fx.Node, env: dict[fx.Node, Any], inputs: torch.Tensor) -> Any:
        if node.op == "placeholder":
            return inputs
        args = fx.graph.map_arg(node.args, lambda a: env[a])
        kwargs = fx.graph.map_arg(node.kwargs, lambda a: env[a])
        if node.op == "get_attr":
            return _attr(self.graph_module, _name(node.target))
        if node.op == "call_function":
            assert callable(node.target)
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            self_arg, *rest = args
            return getattr(self_arg, _name(node.target))(*rest, **kwargs)
        return self.graph_module.get_submodule(_name(node.target))(*args, **kwargs)


def _name(target: Any) -> str:
    """A node's target that names a module, attribute or method (``call_module``, ``get_attr``, ``call_method``)."""
    assert isinstance(target, str), target
    return target


def _attr(module: nn.Module, target: str) -> Any:
    for part in target.split("."):
        module = getattr(module, part)
    return module


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if hasattr(value, "map_tensors"):
        return value.map_tensors(_clone)
    if isinstance(value, (tuple, list)):
        return type(value)(_clone(item) for item in value)
    return value


def _tile_batch(value: Any, n: int, n_blocks: int) -> Any:
    """Repeat batch-first tensors of ``n`` rows ``n_blocks`` times (nested tuples too)."""
    if isinstance(value, torch.Tensor):
        if value.dim() and value.shape[0] == n:
            return value.repeat(n_blocks, *([1] * (value.dim() - 1)))
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(_tile_batch(item, n, n_blocks) for item in value)
    return value


_TRACED: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, fx.GraphModule | None]]" = weakref.WeakKeyDictionary()


def _structure(model: nn.Module) -> tuple:
    """What a traced graph depends on: module, parameter and buffer identities, training flags, the forward."""
    return (
        tuple((name, id(module), type(module), module.training) for name, module in model.named_modules()),
        tuple(id(tensor) for tensor in model.parameters()),
        tuple(id(tensor) for tensor in model.buffers()),
        id(model.__dict__.get("forward")),
    )


class _Tracer(fx.Tracer):
    """``torch.fx``'s tracer, entering ``nn.TransformerEncoder``/``nn.TransformerEncoderLayer`` (traced with the
    fast path off, so their submodules are graph nodes) and keeping PyTorch's mask checks as graph calls."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, (nn.TransformerEncoder, nn.TransformerEncoderLayer)):
            return False
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
        if isinstance(m, nn.TransformerEncoder):
            forward = functools.partial(_encoder_forward, m)
        return super().call_module(m, forward, args, kwargs)


def _encoder_forward(module: nn.TransformerEncoder, src: Any, mask: Any = None, src_key_padding_mask: Any = None,
                     is_causal: bool | None = None) -> Any:
    """``nn.TransformerEncoder.forward`` without the fast path (the layers in turn, then the norm); a causal mask is
    passed as the mask itself, which gives the same attention."""
    output = src
    for layer in module.layers:
        output = layer(output, src_mask=mask, is_causal=False, src_key_padding_mask=src_key_padding_mask)
    if module.norm is not None:
        output = module.norm(output)
    return output


_MASK_HELPERS = ("_canonical_mask", "_none_or_dtype")
"""``torch.nn.functional`` helpers that branch on a mask's dtype: graph calls while tracing."""


def _graph_call(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` recorded as one graph call when it gets a traced value, run as it is otherwise."""
    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        proxy = next((a for a in (*args, *kwargs.values()) if isinstance(a, fx.Proxy)), None)
        if proxy is None:
            return fn(*args, **kwargs)
        return proxy.tracer.create_proxy("call_function", fn, args, kwargs)

    return wrapped


def _symbolic_trace(model: nn.Module) -> fx.GraphModule | None:
    """``model`` traced by :class:`_Tracer` with one input, or ``None``; the model's attributes are left as they were."""
    saved = [(module, dict(module.__dict__)) for module in model.modules()]
    helpers = {name: getattr(F, name) for name in _MASK_HELPERS if hasattr(F, name)}
    try:
        for name, helper in helpers.items():
            setattr(F, name, _graph_call(helper))
        with no_fast_path():
            graph = _Tracer().trace(model)
        traced = fx.GraphModule(model, graph, type(model).__name__)
    except Exception:  # noqa: BLE001 - any untraceable forward keeps the hook path
        return None
    finally:  # a forward that sets attributes must not leave tracing proxies behind
        for name, helper in helpers.items():
            setattr(F, name, helper)
        for module, attributes in saved:
            module.__dict__.clear()
            module.__dict__.update(attributes)
    if sum(n.op == "placeholder" for n in traced.graph.nodes) != 1:
        return None
    return traced
