"""The ``torch.export`` front end, beside ``trace.py``: the ATen-level graph of an
``ExportedProgram`` read back as torch-level modules and functions that ``ann2snn.convert``
understands, so a ``.pt2`` file converts like the ``nn.Module`` it was exported from.

    program = torch.export.load("model.pt2")
    snn = ann2snn.convert(lift_exported(program), calibration=batches, input_shape=example_input_shape(program))

Only the ops in ``EXPORTED_OPS_NOTE`` are read back; any other stays an ATen op, which the
converter then names (and refuses, or keeps analog with ``allow_analog=True``).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["EXPORTED_OPS_NOTE", "ExportedModel", "example_input_shape", "lift_exported"]

EXPORTED_OPS_NOTE = (
    "its ATen ops are read back as torch modules and functions only for convolution, linear, batch norm, "
    "ReLU/hardtanh/clamp, max/average/adaptive pooling, flatten, view/reshape, add, mean, cat, dropout and "
    "softmax; convert the original nn.Module or a checkpoint of it instead"
)


class ExportedModel(fx.GraphModule):
    """The torch-level graph read back from a ``torch.export`` program (see ``lift_exported``).

    Its nodes keep the program's metadata (the user's source lines in ``stack_trace``, the module
    paths in ``nn_module_stack``), and tracing it with ``torch.fx`` (as ``ann2snn.convert`` does)
    copies that metadata into the new graph, so reports and errors name the user's code rather than
    this module's generated ``forward``.
    """

    def recompile(self) -> Any:
        """Generate ``forward`` from the graph, as ``fx.GraphModule`` does, wrapped by ``_keeping_meta``."""
        code = super().recompile()
        type(self).forward = _keeping_meta(type(self).forward)
        return code


def _keeping_meta(generated: Callable) -> Callable:
    """``generated`` (a GraphModule's ``forward``), except while ``torch.fx`` traces it (its inputs
    are proxies): then the graph runs node by node with each node's metadata current, so every node
    the tracer records takes over the source line and module path of the node it came from."""

    @functools.wraps(generated)  # the tracer reads the argument names from the wrapped function
    def forward(module: fx.GraphModule, *args: Any) -> Any:
        if not any(isinstance(a, fx.Proxy) for a in args):
            return generated(module, *args)
        with fx.traceback.preserve_node_meta():
            return fx.Interpreter(module).run(*args)

    return forward


def _aten(name: str):
    packet, overload = name.split(".")
    return getattr(getattr(torch.ops.aten, packet), overload)


def lift_exported(module: torch.export.ExportedProgram | fx.GraphModule) -> ExportedModel:
    """Rewrite the ATen-level graph of an ``ExportedProgram`` (or of its ``.module()``) into
    torch-level modules and functions that the converter understands (conv/linear/batch norm
    modules, ``torch.relu``, ``F.max_pool1d``, ...), dropping the shape guards, so that the batch
    size is free again.

    Ops not listed stay as they are; the converter then names the first one it cannot handle.
    Reshapes to a fixed batch size are rewritten to keep the leading dimension (-1, or the
    reshaped tensor's own ``size(0)`` where another dimension is -1).
    """
    if isinstance(module, torch.export.ExportedProgram):
        module = module.module()
    graph = fx.Graph()
    values: dict[fx.Node, fx.Node] = {}
    output = graph.graph_copy(module.graph, values)
    result = output[0] if isinstance(output, (tuple, list)) and len(output) == 1 else output
    graph.output(result)
    modules: dict[str, nn.Module] = {}

    def tensor(node: fx.Node) -> torch.Tensor:
        return _attr(module, str(node.target)).detach().clone()

    def owner(*params: Any) -> str:
        target = next(p.target for p in params if p is not None)
        name = target.rsplit(".", 1)[0] if "." in target else target
        while name in modules:
            name += "_"
        return name

    def conv(dims: int) -> Callable[[fx.Node], nn.Module]:
        def build(node: fx.Node) -> nn.Module:
            _, weight, bias, *rest = list(node.args) + [None] * max(0, 3 - len(node.args))
            stride, padding, dilation, groups = (rest + [1, 0, 1, 1][len(rest) :])[:4]
            w = tensor(weight)
            layer = (nn.Conv1d if dims == 1 else nn.Conv2d)(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride, padding, dilation, groups, bias=bias is not None)
            layer.weight = nn.Parameter(w)
            if bias is not None:
                layer.bias = nn.Parameter(tensor(bias))
            return layer

        return build

    def linear(node: fx.Node) -> nn.Module:
        weight, bias = node.args[1], node.args[2] if len(node.args) > 2 else None
        w = tensor(weight)
        layer = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
        layer.weight = nn.Parameter(w)
        if bias is not None:
            layer.bias = nn.Parameter(tensor(bias))
        return layer

    def batch_norm(node: fx.Node) -> nn.Module:
        _, weight, bias, mean, var, _, momentum, eps, *_ = node.args
        rank = node.meta["val"].dim() if "val" in node.meta else 3
        norm = (nn.BatchNorm1d if rank <= 3 else nn.BatchNorm2d)(tensor(mean).numel(), eps, momentum, affine=weight is not None)
        norm.running_mean.copy_(tensor(mean))
        norm.running_var.copy_(tensor(var))
        if weight is not None:
            norm.weight = nn.Parameter(tensor(weight))
            norm.bias = nn.Parameter(tensor(bias))
        return norm.eval()

    as_module: dict[Any, tuple[Callable[[fx.Node], nn.Module], Callable[[fx.Node], tuple]]] = {
        _aten("conv1d.default"): (conv(1), lambda n: n.args[1:3]),
        _aten("conv2d.default"): (conv(2), lambda n: n.args[1:3]),
        _aten("linear.default"): (linear, lambda n: n.args[1:3]),
        _aten("batch_norm.default"): (batch_norm, lambda n: (n.args[1], n.args[3])),
    }
    as_function: dict[Any, Callable] = {
        _aten("relu.default"): torch.relu,
        _aten("relu_.default"): torch.relu_,
        _aten("hardtanh.default"): F.hardtanh,
        _aten("clamp.default"): torch.clamp,
        _aten("max_pool1d.default"): F.max_pool1d,
        _aten("max_pool2d.default"): F.max_pool2d,
        _aten("avg_pool1d.default"): F.avg_pool1d,
        _aten("avg_pool2d.default"): F.avg_pool2d,
        _aten("adaptive_avg_pool1d.default"): F.adaptive_avg_pool1d,
        _aten("adaptive_avg_pool2d.default"): F.adaptive_avg_pool2d,
        _aten("flatten.using_ints"): torch.flatten,
        _aten("add.Tensor"): torch.add,
        _aten("mean.dim"): torch.mean,
        _aten("cat.default"): torch.cat,
    }
    softmax = {_aten("log_softmax.int"): F.log_softmax, _aten("softmax.int"): F.softmax}  # (x, dim, dtype): keep (x, dim)
    for node in list(graph.nodes):
        if node.op == "call_module" and str(node.target).startswith("_guards"):
            graph.erase_node(node)
        elif node.op != "call_function":
            continue
        elif node.target in as_module:
            build, params = as_module[node.target]
            name = owner(*params(node))
            modules[name] = build(node)
            with graph.inserting_before(node):
                new = graph.call_module(name, (node.args[0],))
            new.meta = dict(node.meta)  # the user's source line and module path
            node.replace_all_uses_with(new)
            graph.erase_node(node)
        elif node.target in as_function:
            node.target = as_function[node.target]
        elif node.target in softmax:
            node.target, node.args = softmax[node.target], node.args[:2]
        elif node.target in (_aten("view.default"), _aten("reshape.default")):
            rest = tuple(node.args[1][1:])
            if -1 in rest:  # x.view(x.size(0), -1) exported as view(x, [4, -1]): the batch from x itself
                with graph.inserting_before(node):
                    batch = graph.call_method("size", (node.args[0], 0))
                node.target, node.args = torch.reshape, (node.args[0], (batch, *rest))
            else:
                node.target, node.args = torch.reshape, (node.args[0], (-1, *rest))
        elif node.target == _aten("dropout.default"):  # (x, p, train): the converter drops and reports it
            node.target = F.dropout
        elif node.target in (_aten("clone.default"), _aten("contiguous.default")):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
        elif node.target in (torch._assert, _aten("_assert_scalar.default"), _aten("sym_constrain_range_for_size.default")):
            graph.erase_node(node)
    for node in reversed(list(graph.nodes)):
        if node.op == "get_attr" and not node.users:
            graph.erase_node(node)
    attributes = {str(n.target): _attr(module, str(n.target)) for n in graph.nodes if n.op == "get_attr"}
    return ExportedModel({**attributes, **modules}, graph).eval()


def _attr(module: nn.Module, target: str) -> Any:
    owner, _, name = target.rpartition(".")
    return getattr(module.get_submodule(owner) if owner else module, name)


def example_input_shape(program: torch.export.ExportedProgram) -> Optional[tuple[int, ...]]:
    """The per-example shape of the program's example input (without the batch dimension), when
    it was exported with one tensor input; else None."""
    inputs = program.example_inputs[0] if program.example_inputs else ()
    return tuple(inputs[0].shape[1:]) if len(inputs) == 1 and isinstance(inputs[0], torch.Tensor) else None
