"""Hostile files the safe format and the torch.export check must refuse (second review): objects
whose ``repr`` fx would paste into generated code, classes reached through attribute chains,
shape expressions that sympy never finishes evaluating, and ``save`` of what ``load`` cannot read."""

import json
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import fx, nn

import ann2snn
from ann2snn import safe_format
from ann2snn.cli import main
from ann2snn.export_archive import costly_expressions, unsafe_entries
from snn_test_nets import INPUT_SHAPE, ResidualConcatNet
from test_cli import small_net
from test_security import rewrite_archive


def saved_snn(path: Path) -> Path:
    """A converted ResidualConcatNet saved in the safe format at ``path``."""
    torch.manual_seed(0)
    ann2snn.save(ann2snn.convert(ResidualConcatNet().eval(), T=4, calibration=[torch.randn(4, *INPUT_SHAPE)]), path)
    return path


def tampered(path: Path, edit: Callable[[dict], None]) -> Path:
    """The saved network at ``path`` with its JSON description edited in place by ``edit``."""
    payload = torch.load(path, weights_only=True)
    description = json.loads(payload["description"])
    edit(description)
    payload["description"] = json.dumps(description)
    torch.save(payload, path)
    return path


def first_call_function(description: dict) -> dict:
    graph = next(m for m in description["modules"] if "graph" in m)["graph"]
    return next(node for node in graph if node["op"] == "call_function" and node["target"]["$function"].startswith("torch."))


def add_argument(value: Any) -> Callable[[dict], None]:
    """An edit that appends ``value`` (tagged JSON) to the first call_function node's arguments."""
    return lambda d: first_call_function(d)["args"]["$tuple"].append(value)


def code_in_repr(marker: Path) -> str:
    """Text that, pasted by fx into ``forward`` inside ``VR[..., 0]``, creates ``marker`` when run."""
    return f"0] if open({str(marker)!r}, 'w') else [0"


def crafted_dataclass(name: str, marker: Path) -> dict:
    fields = [["lower", code_in_repr(marker)], ["upper", "0"]] if "ValueRanges" in name else [["node", code_in_repr(marker)]]
    return {"$dataclass": name, "fields": {"$dict": fields, "ordered": False}}


# -- finding 1: code pasted into the generated forward ----------------------------------------------------
@pytest.mark.parametrize(
    "name, message",
    [
        ("torch.fx.experimental.symbolic_shapes:ValueRanges", "dataclass .* is not one the safe format may create"),
        ("torch.utils._sympy.value_ranges:ValueRanges", "dataclass .* is not one the safe format may create"),
        ("ann2snn.report:Entry", "an argument is a ann2snn.report.Entry, which a stored graph may not hold"),
    ],
)
def test_load_refuses_a_dataclass_argument_whose_repr_is_code(tmp_path, name, message):
    marker = tmp_path / "marker"
    path = tampered(saved_snn(tmp_path / "snn.pt"), add_argument(crafted_dataclass(name, marker)))
    with pytest.raises(ann2snn.ConversionError, match=message):
        ann2snn.load(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "argument, message",
    [
        ({"$module": "network.fc"}, "an argument is a torch.nn.modules.linear.Linear"),
        ({"$set": [1, 2]}, "an argument is a builtins.set"),
        ({"$tensor": 0, "parameter": False, "requires_grad": False}, "an argument is a torch"),
        ({"$function": "torch.relu"}, "an argument is a builtins.builtin_function_or_method"),
    ],
)
def test_load_refuses_graph_arguments_that_are_not_plain_constants(tmp_path, argument, message):
    path = tampered(saved_snn(tmp_path / "snn.pt"), add_argument(argument))
    with pytest.raises(ann2snn.ConversionError, match=message):
        ann2snn.load(path)


@pytest.mark.parametrize(
    "name, message",
    [
        ("ann2snn.io:pickle.Unpickler", "is not one the safe format may create"),  # an attribute chain out of ann2snn
        ("ann2snn.io:Path", "is pathlib:Path, defined elsewhere"),  # a name ann2snn.io imported
        ("ann2snn.io:SpikingNetwork", "is ann2snn.timeloop:SpikingNetwork, defined elsewhere"),
        ("torch.fx.experimental.symbolic_shapes:ShapeEnv", "is not one the safe format may create"),
    ],
)
def test_load_resolves_no_class_through_attribute_chains_or_aliases(tmp_path, name, message):
    path = tampered(saved_snn(tmp_path / "snn.pt"), lambda d: d["modules"][0].update({"class": name}))
    with pytest.raises(ann2snn.ConversionError, match=message):
        ann2snn.load(path)


@pytest.mark.parametrize("name", ["ann2snn.io:pickle.Unpickler", "torch.nn.modules.conv:Conv1d", "ann2snn.report:Entry"])
def test_load_refuses_class_references_other_than_a_tracer(tmp_path, name):
    path = tampered(saved_snn(tmp_path / "snn.pt"), lambda d: d["modules"][0]["state"].update({"extra": {"$class": name}}))
    with pytest.raises(ann2snn.ConversionError, match="is not one a network refers to"):
        ann2snn.load(path)


def test_load_refuses_unknown_fields_of_an_allowed_dataclass(tmp_path):
    def edit(description: dict) -> None:
        report = description["modules"][0]["state"]["report"]
        report["fields"]["$dict"].append(["__class__", "x"])

    with pytest.raises(ann2snn.ConversionError, match="ConversionReport has no field '__class__'"):
        ann2snn.load(tampered(saved_snn(tmp_path / "snn.pt"), edit))


def test_load_refuses_a_graph_whose_generated_code_does_not_compile(tmp_path):
    """A keyword argument named ``lambda`` passes the name check but makes code fx cannot compile:
    a one-line ConversionError, not a SyntaxError from inside fx."""
    path = tampered(saved_snn(tmp_path / "snn.pt"), lambda d: first_call_function(d)["kwargs"]["$dict"].append(["lambda", 1]))
    with pytest.raises(ann2snn.ConversionError, match="the generated code does not compile"):
        ann2snn.load(path)


class CodeInRepr:
    """An argument whose ``repr`` is code: what the checks of stored arguments keep out of a graph."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __repr__(self) -> str:
        return f"open({str(self.marker)!r}, 'w').close()"


def test_generated_code_check_refuses_code_from_an_argument_repr(tmp_path):
    graph = fx.Graph()
    x = graph.placeholder("x")
    graph.output(graph.call_function(torch.flatten, (x, CodeInRepr(tmp_path / "marker"))))
    with pytest.raises(safe_format.DamagedDescription, match="uses the name 'open'"):
        safe_format.check_generated_code(graph, "test graph")
    plain = fx.Graph()
    y = plain.placeholder("x")
    plain.output(plain.call_function(torch.flatten, (y, 1), {"end_dim": -1}))
    safe_format.check_generated_code(plain, "plain graph")  # an honest graph passes
    assert not (tmp_path / "marker").exists()


def test_network_with_an_argument_outside_the_format_is_pickled_not_described(tmp_path):
    """``save`` writes nothing ``load`` would refuse: such a network becomes a pickle, with a warning."""
    torch.manual_seed(0)
    network = ann2snn.convert(ResidualConcatNet().eval(), T=4, calibration=[torch.randn(4, *INPUT_SHAPE)])
    node = next(n for n in network.network.graph.nodes if n.op == "call_function")
    node.kwargs = {**node.kwargs, "note": network.report.entries[0]}
    with pytest.warns(UserWarning, match="saved as a pickle.*argument that is a ann2snn.report.Entry"):
        ann2snn.save(network, tmp_path / "snn.pt")
    with pytest.raises(ann2snn.ConversionError, match="trust_pickle=True"):
        ann2snn.load(tmp_path / "snn.pt")


# -- finding 2: a shape expression that sympy never finishes --------------------------------------------
@pytest.mark.parametrize("trust", [[], ["--trust-pickle"]])
def test_exported_archive_with_a_huge_power_is_refused_fast(tmp_path, capsys, monkeypatch, trust):
    """Refused before torch reads the archive, trusted or not: --trust-pickle allows code from the
    file, not an expression that keeps sympy busy forever."""
    path = tmp_path / "dynamic.pt2"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.export.save(torch.export.export(small_net(), (torch.randn(2, 1, 32),), dynamic_shapes=({0: batch},)), path)

    def inject(data: bytes) -> bytes:
        text = data.decode()
        start = text.index('"expr_str": "') + len('"expr_str": "')
        end = text.index('"', start)
        return (text[:start] + text[start:end] + " + 9**9**9**9" + text[end:]).encode()

    evil = tmp_path / "evil.pt2"
    rewrite_archive(path, evil, {"models/model.json": inject})
    problems = unsafe_entries(evil)  # before the CLI: without the check, converting never returns
    assert len(problems) == 1 and "9**9**9**9" in problems[0] and "a power" in problems[0]
    monkeypatch.setattr(torch.export, "load", lambda *args, **kwargs: pytest.fail("torch.export.load read the archive: it never returns"))
    started = time.monotonic()
    code = main(["convert", str(evil), "-o", str(tmp_path / "snn.pt"), *trust])
    err = capsys.readouterr().err
    assert time.monotonic() - started < 2
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert code == 2 and len(errors) == 1 and str(evil) in errors[0] and "9**9**9**9" in errors[0], err
    assert "even with --trust-pickle" in errors[0] and "pass --trust-pickle" not in errors[0]
    assert not (tmp_path / "snn.pt").exists()


@pytest.mark.parametrize(
    "expression, reason",
    [
        ("s0 + 9**9**9**9", "a power"),
        ("Pow(9, Pow(9, 99999))*s0", "a power"),
        ("LShift(s0, 999999999999)", "a power or shift"),
        ("Pow(s0, 17)", "a power or shift by 17, not a whole number from -16 to 16"),
        ("Pow(s0, Rational(1, 2))", "a power or shift by Rational(1, 2)"),
        ("PowByNatural(9, 99999)", "a power or shift by 99999"),
        ("(s0**16)**16", "a power of a power"),
        ("9^9^9^9", "a power of a power"),  # sympify reads ^ as **
        ("s0 + 99999999999!", "not a Python expression"),  # sympify reads ! as a factorial, computed exactly
        ("s0 + 12345678901234567890", "the number 12345678901234567890"),
        ("s0*1e999999999", "the number 1e999999999"),
        ("s0 + " + " + ".join(["s1"] * 1000), "over 2000 characters"),
    ],
)
def test_costly_shape_expressions_are_named(tmp_path, expression, reason):
    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(small_net(), (torch.randn(2, 1, 32),)), path)
    program = {"graph": {"sym_int_values": [{"as_expr": {"expr_str": expression}}]}}
    evil = tmp_path / "evil.pt2"
    rewrite_archive(path, evil, {"models/model.json": json.dumps(program).encode()})
    problems = unsafe_entries(evil)
    assert len(problems) == 1 and "shape expression" in problems[0] and reason in problems[0], problems
    assert costly_expressions(evil) == problems  # refused with --trust-pickle too


def test_honest_shape_expressions_pass():
    from ann2snn.export_archive import _arithmetic, _costly

    for text in ["Symbol('s77', positive=True, integer=True)", "FloorDiv(s0 - 1, 2) + 1", "2*s0 + 31", "Max(1, s1)", "s0 % 4", "Mul(Integer(4), Pow(s0, Integer(2)))", "s0**16*s1**-1"]:
        assert _costly(text) == "" and _arithmetic(text), text


class SquareNet(nn.Module):
    """Conv2d + ReLU + the mean over the S*S pixels + linear, for square [1, S, S] inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 1), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).flatten(1)  # [B, 4*S*S]: shape expressions with S**2
        return self.fc(h.view(h.size(0), 4, -1).mean(2))


def test_exported_square_model_with_a_small_power_converts_when_trusted(tmp_path, capsys):
    """A model exported with one dynamic side S has S**2 in its shape expressions: a small power
    sympy evaluates at once, so a trusted archive converts."""
    side = torch.export.Dim("S", min=2, max=64)
    program = torch.export.export(SquareNet().eval(), (torch.randn(2, 1, 8, 8),), dynamic_shapes={"x": {2: side, 3: side}})
    torch.export.save(program, tmp_path / "square.pt2")
    with zipfile.ZipFile(tmp_path / "square.pt2") as archive:
        assert any("Pow(" in archive.read(name).decode() for name in archive.namelist() if "/models/" in name)
    assert costly_expressions(tmp_path / "square.pt2") == []
    code = main(["convert", str(tmp_path / "square.pt2"), "--trust-pickle", "--input-shape", "1,8,8", "-o", str(tmp_path / "snn.pt")])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "snn.pt").exists()


# -- finding 3: save writes only what load reads -----------------------------------------------------------
@pytest.mark.parametrize("obj", [nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU()), {"state": 1}])
def test_save_refuses_anything_but_a_spiking_network(tmp_path, obj):
    with pytest.raises(ann2snn.ConversionError, match=r"got a .*(Sequential|dict): convert it first .*ann2snn.convert.*torch.save"):
        ann2snn.save(obj, tmp_path / "cnn.pt")
    assert list(tmp_path.iterdir()) == []
