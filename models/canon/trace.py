"""Derive a permutation spec by tracing a module with torch.fx.

Every axis of every tensor in the traced graph gets a unit variable; operations
tie variables together (union-find) and state-dict entries record which
variable each of their axes carries. The groups that remain are the perms:

- the output axis of a Linear/Conv opens a new variable, its input axis takes
  the variable of the incoming feature axis (a shared module ties both uses);
- BatchNorm and LayerNorm weights, biases and running statistics take the
  variable of the axis they normalize;
- activations, dropout, pooling, softmax and reductions keep the variables of
  the axes they keep;
- elementwise binary operations (residual additions, scaling by a parameter)
  merge the variables of matching broadcast axes;
- flatten keeps a variable only if the other flattened axes have size 1 (a
  channel perm spread over HxW positions is not expressible as a spec);
- the network's input and output axes, and kernel and size-1 axes, are fixed.

A group tied to a fixed axis (e.g. a residual stream that adds the raw input) is
left unpermuted. Anything else (data-dependent control flow, an op or a torch.nn
module not listed here) raises TraceError naming the module and the operation.
Attention is not traced: its families keep their explicit spec (models.canon.spec).
"""

import math
import operator
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

from .spec import Axes, PermutationSpec

FIXED = 0  # the variable of every axis that may not be permuted


class TraceError(ValueError):
    """Raised when a module's graph cannot be traced into a permutation spec."""


UNARY_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid, nn.ELU,
    nn.SELU, nn.CELU, nn.Softplus, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Softmax, nn.LogSoftmax,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip
UNARY_FUNCTIONS = {
    torch.relu, F.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, F.mish, torch.tanh, F.tanh,
    torch.sigmoid, F.sigmoid, F.elu, F.selu, F.celu, F.softplus, F.hardtanh, F.hardswish,
    F.hardsigmoid, F.dropout, F.softmax, F.log_softmax, torch.softmax, torch.log_softmax,
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
}  # fmt: skip
UNARY_METHODS = {"relu", "tanh", "sigmoid", "softmax", "log_softmax", "contiguous", "clone"}
BINARY_FUNCTIONS = {
    operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub,
    operator.mul, operator.imul, torch.mul, operator.truediv, torch.div,
}  # fmt: skip
BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
REDUCTIONS = {torch.mean, torch.sum, torch.amax, torch.amin, "mean", "sum", "amax", "amin"}
SHAPE_QUERIES = {"size", "dim", getattr}  # Tensor.size(), Tensor.dim(), x.shape: read shapes, not values


class _UnionFind:
    """Unit variables; variable 0 is FIXED."""

    def __init__(self) -> None:
        self.parent = [FIXED]

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, v: int) -> int:
        while self.parent[v] != v:
            self.parent[v] = self.parent[self.parent[v]]
            v = self.parent[v]
        return v

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        root, child = (a, b) if a == FIXED or (b != FIXED and a < b) else (b, a)
        self.parent[child] = root
        return root


def _where(node: torch.fx.Node) -> str:
    """ "module 'block' (Block)" or "the top-level module": where the node's operation sits."""
    stack = [entry for entry in (node.meta.get("nn_module_stack") or {}).values() if entry[0] != node.target]
    path, kind = stack[-1] if stack else ("", type(None))
    return f"module {path!r} ({getattr(kind, '__name__', kind)})" if path else "the top-level module"


def _operation(node: torch.fx.Node, root: nn.Module) -> str:
    if node.op == "call_module":
        return f"{type(root.get_submodule(node.target)).__name__} {node.target!r}"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    name = getattr(node.target, "__name__", repr(node.target))
    module = getattr(node.target, "__module__", None)
    return f"{module}.{name}" if module else name


def _argument(node: torch.fx.Node, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


class _Propagator(torch.fx.Interpreter):
    """Runs the graph on an example batch and assigns a variable to every axis of every tensor."""

    def __init__(self, graph_module: torch.fx.GraphModule, root: nn.Module):
        super().__init__(graph_module)
        self.extra_traceback = False  # our errors already say where
        self.root = root
        self.units = _UnionFind()
        self.vars: dict[torch.fx.Node, tuple[int, ...] | None] = {}
        self.carried: dict[str, tuple[int, ...]] = {}  # state-dict key -> variable per axis

    def run_node(self, node: torch.fx.Node) -> Any:
        try:
            result = super().run_node(node)
        except Exception as error:
            raise TraceError(
                f"running {_operation(node, self.root)} in {_where(node)} failed on an example batch: {error}"
            ) from error
        if node.op == "output":
            self._fix_outputs(node.args)
        elif isinstance(result, torch.Tensor):
            self.vars[node] = self._assign(node, result)
        else:
            self._check_non_tensor(node)
            self.vars[node] = None
        return result

    def _check_non_tensor(self, node: torch.fx.Node) -> None:
        """A Python value computed from a tensor may only be its shape (values could leak unit order)."""
        reads_tensor = any(self.vars.get(arg) is not None for arg in node.all_input_nodes)
        if reads_tensor and node.target not in SHAPE_QUERIES:
            raise self._unsupported(node, " (its result is not a tensor)")

    def _fix_outputs(self, value: Any) -> None:
        if isinstance(value, torch.fx.Node):
            for v in self.vars.get(value) or ():
                self.units.union(v, FIXED)
        elif isinstance(value, list | tuple):
            for item in value:
                self._fix_outputs(item)
        elif isinstance(value, dict):
            for item in value.values():
                self._fix_outputs(item)

    def _input(self, node: torch.fx.Node, index: int = 0) -> tuple[int, ...]:
        arg = node.args[index]
        found = self.vars.get(arg) if isinstance(arg, torch.fx.Node) else None
        if found is None:
            raise TraceError(
                f"{_operation(node, self.root)} in {_where(node)} does not take a tensor computed by "
                "the traced graph as its input; pass tensors through the module's forward"
            )
        return found

    def _carry(self, key: str, axes: Sequence[int]) -> None:
        """Record that state-dict entry `key` carries `axes`; a second use ties them to the first."""
        if key in self.carried:
            axes = tuple(self.units.union(a, b) for a, b in zip(self.carried[key], axes, strict=True))
        self.carried[key] = tuple(axes)

    def _fresh(self, shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(FIXED if size == 1 else self.units.new() for size in shape)

    def _unsupported(self, node: torch.fx.Node, why: str = "") -> TraceError:
        return TraceError(
            f"cannot derive a permutation spec: {_operation(node, self.root)} is not supported{why}, "
            f"in {_where(node)}. Supported: Linear, Conv (groups=1), BatchNorm, LayerNorm, activations, "
            "dropout, pooling, flatten, reductions and elementwise arithmetic (residual additions); "
            "rewrite the module with these, or register a family with a hand-written spec"
        )

    def _assign(self, node: torch.fx.Node, result: torch.Tensor) -> tuple[int, ...]:
        if node.op == "placeholder":
            return (FIXED,) * result.dim()
        if node.op == "get_attr":
            axes = self._fresh(result.shape)
            self._carry(node.target, axes)
            return axes
        if node.op == "call_module":
            return self._module(node, self.root.get_submodule(node.target), result)
        name = node.target  # a function, or a method name
        if name in UNARY_FUNCTIONS or name in UNARY_METHODS:
            return self._same_rank(node, result)
        if name in BINARY_FUNCTIONS or name in BINARY_METHODS:
            return self._elementwise(node, result)
        if name in REDUCTIONS:
            return self._reduce(node)
        if name in (torch.flatten, "flatten"):
            x = self._input(node)
            start, end = _argument(node, 1, "start_dim", 0), _argument(node, 2, "end_dim", -1)
            return self._flatten(node, x, start % len(x), end % len(x))
        if name in ("view", "reshape") or name is torch.reshape:
            return self._reshape(node, result)
        raise self._unsupported(node)

    def _module(self, node: torch.fx.Node, module: nn.Module, result: torch.Tensor) -> tuple[int, ...]:
        path = node.target
        if isinstance(module, nn.Linear):
            x, out = self._input(node), self.units.new()
            self._carry(f"{path}.weight", (out, x[-1]))
            if module.bias is not None:
                self._carry(f"{path}.bias", (out,))
            return (*x[:-1], out)
        if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            if module.groups != 1:
                raise self._unsupported(node, f" with groups={module.groups}")
            x, out = self._input(node), self.units.new()
            if len(x) != module.weight.dim():
                raise self._unsupported(node, " on an input without a batch axis")
            self._carry(f"{path}.weight", (out, x[1], *(FIXED,) * (len(x) - 2)))
            if module.bias is not None:
                self._carry(f"{path}.bias", (out,))
            return (x[0], out, *x[2:])
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            x = self._input(node)
            for name, tensor in module.state_dict().items():
                self._carry(f"{path}.{name}", (x[1],) if tensor.dim() else ())
            return x
        if isinstance(module, nn.LayerNorm):
            x = self._input(node)
            normalized = x[len(x) - len(module.normalized_shape) :]
            for name in module.state_dict():
                self._carry(f"{path}.{name}", normalized)
            return x
        if isinstance(module, nn.Flatten):
            x = self._input(node)
            return self._flatten(node, x, module.start_dim % len(x), module.end_dim % len(x))
        if isinstance(module, UNARY_MODULES):
            return self._same_rank(node, result)
        raise self._unsupported(node)

    def _same_rank(self, node: torch.fx.Node, result: torch.Tensor) -> tuple[int, ...]:
        """Elementwise maps, softmax and pooling: every axis keeps its variable."""
        x = self._input(node)
        if len(x) != result.dim():
            raise self._unsupported(node, f" that changes the number of axes ({len(x)} to {result.dim()})")
        return x

    def _elementwise(self, node: torch.fx.Node, result: torch.Tensor) -> tuple[int, ...]:
        """Broadcast binary op: the variables of each output axis (sizes > 1) are tied together."""
        operands = [
            (self.vars[arg], self.env[arg].shape)
            for arg in node.args[:2]
            if isinstance(arg, torch.fx.Node) and self.vars.get(arg) is not None
        ]
        out = []
        for axis in range(-result.dim(), 0):
            tied = [v[axis] for v, shape in operands if len(v) >= -axis and shape[axis] > 1]
            root = tied[0] if tied else FIXED
            for v in tied[1:]:
                root = self.units.union(root, v)
            out.append(root)
        return tuple(out)

    def _reduce(self, node: torch.fx.Node) -> tuple[int, ...]:
        """mean/sum/amax/amin over `dim`: the result is invariant along the reduced axes."""
        x = self._input(node)
        dim, keepdim = _argument(node, 1, "dim", None), _argument(node, 2, "keepdim", False)
        if dim is None:
            return ()
        reduced = {d % len(x) for d in (dim if isinstance(dim, list | tuple) else (dim,))}
        if keepdim:
            return tuple(FIXED if i in reduced else v for i, v in enumerate(x))
        return tuple(v for i, v in enumerate(x) if i not in reduced)

    def _flatten(self, node: torch.fx.Node, x: tuple[int, ...], start: int, end: int) -> tuple[int, ...]:
        shape = self.env[node.args[0]].shape
        merged = [
            (self.units.find(v), size)
            for v, size in zip(x[start : end + 1], shape[start : end + 1], strict=True)
            if size > 1
        ]
        permuted = [v for v, _ in merged if v != FIXED]
        if permuted and len(merged) > 1:
            spread = math.prod(size for _, size in merged) // dict(merged)[permuted[0]]
            raise TraceError(
                f"cannot derive a permutation spec: {_operation(node, self.root)} flattens axes of sizes "
                f"{tuple(shape[start : end + 1])}, spreading a unit permutation over {spread} positions, "
                f"which a spec cannot express, in {_where(node)}. Pool to size 1 first (e.g. "
                "nn.AdaptiveAvgPool2d(1) or x.mean(dim=(2, 3))) so only the channel axis is flattened"
            )
        return (*x[:start], permuted[0] if permuted else FIXED, *x[end + 1 :])

    def _reshape(self, node: torch.fx.Node, result: torch.Tensor) -> tuple[int, ...]:
        """A reshape that flattens trailing axes (x.view(x.size(0), -1)); any other is unsupported."""
        x, shape = self._input(node), tuple(self.env[node.args[0]].shape)
        out = tuple(result.shape)
        if out == shape:
            return x
        start = len(out) - 1
        if shape[:start] == out[:start] and math.prod(shape[start:]) == out[start]:
            return self._flatten(node, x, start, len(x) - 1)
        raise self._unsupported(node, f" as a reshape of {shape} to {out} (only flattening trailing axes is)")

    def spec(self, state_dict: dict[str, torch.Tensor]) -> PermutationSpec:
        """Group names from the first (key, axis) carrying each group, in state-dict order."""
        names: dict[int, str] = {}
        axes: dict[str, Axes] = {}
        for key, tensor in state_dict.items():
            carried = self.carried.get(key, (FIXED,) * tensor.dim())  # an entry the graph never reads
            roots = [self.units.find(v) for v in carried]
            for axis, root in enumerate(roots):
                if root != FIXED and root not in names:
                    base = key.rsplit(".", 1)[0] if axis == 0 else f"{key}[{axis}]"
                    names[root] = base if base not in names.values() else f"{base}#{len(names)}"
            permuted = [r for r in roots if r != FIXED]
            if len(permuted) != len(set(permuted)):
                raise TraceError(
                    f"cannot derive a permutation spec: {key} carries the same unit permutation on two "
                    "axes (a layer whose output is added to its own input?); weight matching needs "
                    "each permutation at most once per tensor. Put a hidden layer between them"
                )
            axes[key] = tuple(None if r == FIXED else names[r] for r in roots)
        return PermutationSpec(axes)


def trace_spec(module: nn.Module, input_shape: Sequence[int]) -> PermutationSpec:
    """The permutation spec of `module` on inputs (B, *input_shape), derived from its fx graph.

    Raises TraceError for what cannot be traced or is not supported, naming the
    module and the operation.
    """
    tracer = torch.fx.Tracer()
    try:
        graph = tracer.trace(module)
    except Exception as error:
        stack = list(getattr(tracer, "module_stack", {}).values())
        path, kind = stack[-1] if stack else ("", type(module))
        where = f"module {path!r} ({kind.__name__})" if path else f"{type(module).__name__}.forward"
        raise TraceError(
            f"cannot trace {where} with torch.fx ({type(error).__name__}: {error}); data-dependent "
            "control flow and Python-level tensor inspection cannot be traced: express the forward "
            "with tensor operations only"
        ) from error
    graph_module = torch.fx.GraphModule(module, graph)
    propagator = _Propagator(graph_module, module)
    was_training = module.training
    module.eval()  # example statistics must not move running averages
    try:
        with torch.no_grad():
            propagator.run(torch.randn(2, *input_shape))
    finally:
        module.train(was_training)
    return propagator.spec(module.state_dict())
