"""Hostile and careless input (issue 12): no code runs from a file without consent, no output
destroys an input or another output, writes are all or nothing, refusals are one line."""

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

import ann2snn
from ann2snn.atomic import atomic_path, partial_path
from ann2snn.cli import main
from snn_test_nets import INPUT_SHAPE, ResidualConcatNet
from test_cli import small_net


class RunsCode:
    """Unpickling this creates the file ``marker``: stands for any code a hostile file runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def run(capsys, *args: object) -> tuple[int, str, str]:
    code = main(["convert", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *words: str) -> bool:
    """Exactly one ``error:`` line (warnings may precede it), naming ``words``; no traceback."""
    errors = [line for line in err.splitlines() if line.startswith("error")]
    return len(errors) == 1 and all(w in errors[0] for w in words) and "Traceback" not in err


@pytest.fixture
def exported(tmp_path) -> Path:
    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(small_net(), (torch.randn(2, 1, 32),)), path)
    return path


def rewrite_archive(source: Path, target: Path, replace: dict) -> None:
    """Copy the zip ``source`` to ``target``, with entries ending in a key of ``replace`` swapped
    for its bytes (or, for a callable, for what it returns from the old bytes); new keys added."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        root = old.namelist()[0].split("/")[0]
        done = set()
        for info in old.infolist():
            key = next((k for k in replace if info.filename.endswith(k)), None)
            data = old.read(info)
            if key is not None:
                done.add(key)
                data = replace[key](data) if callable(replace[key]) else replace[key]
            new.writestr(info.filename, data)
        for key in set(replace) - done:
            new.writestr(f"{root}/{key}", replace[key])


def pickled(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


# -- 1: torch.export archives -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["evil.pt2", "model.pt"])  # the CLI recognises archives by content
def test_exported_archive_with_pickled_sample_inputs_runs_no_code(exported, tmp_path, capsys, name):
    marker = tmp_path / "marker"
    evil = tmp_path / name
    rewrite_archive(exported, evil, {"data/sample_inputs/model.pt": pickled(((RunsCode(marker),), {}))})
    code, out, err = run(capsys, evil, "-o", tmp_path / "snn.pt")
    assert not marker.exists()
    assert code == 2 and one_line_error(err, "--trust-pickle", "sample inputs")
    assert not (tmp_path / "snn.pt").exists()


def test_exported_archive_with_pickled_weight_or_native_library_is_refused(exported, tmp_path, capsys):
    def pickle_first_weight(data: bytes) -> bytes:
        config = json.loads(data)
        config["config"]["conv.weight"]["use_pickle"] = True
        return json.dumps(config).encode()

    cases = {
        "pickled weight": {"data/weights/model_weights_config.json": pickle_first_weight},
        "native library": {"data/aotinductor/model/model.so": b"\x7fELF"},
        "legacy pickle": {"data/weights/model.pt": pickled({"w": RunsCode(tmp_path / "marker")})},
    }
    for case, replace in cases.items():
        evil = tmp_path / "evil.pt2"
        rewrite_archive(exported, evil, replace)
        code, out, err = run(capsys, evil, "-o", tmp_path / "snn.pt")
        assert code == 2 and one_line_error(err, "--trust-pickle"), (case, err)
    assert not (tmp_path / "marker").exists()


def test_exported_archive_with_code_in_a_shape_expression_is_refused(tmp_path, capsys):
    marker = tmp_path / "marker"
    path = tmp_path / "dynamic.pt2"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.export.save(torch.export.export(small_net(), (torch.randn(2, 1, 32),), dynamic_shapes=({0: batch},)), path)

    def inject(data: bytes) -> bytes:
        text = data.decode()
        start = text.index('"expr_str": ') + len('"expr_str": ')
        end = text.index('"', start + 1) + 1
        return (text[:start] + json.dumps(f"__import__('builtins').open({str(marker)!r}, 'w') and s0") + text[end:]).encode()

    evil = tmp_path / "evil.pt2"
    rewrite_archive(path, evil, {"models/model.json": inject})
    code, out, err = run(capsys, evil, "-o", tmp_path / "snn.pt")
    assert not marker.exists()
    assert code == 2 and one_line_error(err, "shape expression", "--trust-pickle")
    code, out, err = run(capsys, path, "-o", tmp_path / "snn.pt")  # the honest dynamic-shape archive converts
    assert code == 0, err


# -- 2: ann2snn.load ----------------------------------------------------------------------------------
def snn() -> ann2snn.SpikingNetwork:
    torch.manual_seed(0)
    return ann2snn.convert(ResidualConcatNet().eval(), T=4, calibration=[torch.randn(4, *INPUT_SHAPE)])


def test_load_runs_no_code_from_a_hostile_file(tmp_path):
    marker = tmp_path / "marker"
    for name, payload in {
        "header_first.pt": {"format": "ann2snn.SpikingNetwork", "version": 2, "network": RunsCode(marker)},
        "old_format.pt": {"format": "ann2snn.SpikingNetwork", "version": 1, "network": RunsCode(marker)},
        "plain.pt": RunsCode(marker),
    }.items():
        torch.save(payload, tmp_path / name)
        with pytest.raises(ann2snn.ConversionError, match="trust_pickle=True"):
            ann2snn.load(tmp_path / name)
        assert not marker.exists(), name
    with (tmp_path / "pickle.dump").open("wb") as file:
        pickle.dump(RunsCode(marker), file)
    with pytest.raises(ann2snn.ConversionError, match="trust_pickle=True"):
        ann2snn.load(tmp_path / "pickle.dump")
    assert not marker.exists()


def test_old_pickled_format_loads_only_when_trusted(tmp_path):
    network = snn()
    torch.save({"format": "ann2snn.SpikingNetwork", "version": 1, "network": network}, tmp_path / "old.pt")
    with pytest.raises(ann2snn.ConversionError, match="old format version 1.*trust_pickle=True"):
        ann2snn.load(tmp_path / "old.pt")
    x = torch.randn(3, *INPUT_SHAPE)
    with torch.no_grad():
        assert torch.equal(ann2snn.load(tmp_path / "old.pt", trust_pickle=True)(x), network(x))


def tampered(path: Path, edit) -> Path:
    """The saved network at ``path`` with its description edited by ``edit(dict)``."""
    payload = torch.load(path, weights_only=True)
    description = json.loads(payload["description"])
    edit(description)
    payload["description"] = json.dumps(description)
    torch.save(payload, path)
    return path


def graph_of(description: dict) -> list:
    return next(m for m in description["modules"] if "graph" in m)["graph"]


def _call_function(d: dict, name: str) -> None:
    graph_of(d)[1].update(op="call_function", target={"$function": name})


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["modules"][0].update({"class": "os:system"}), "not one the safe format may create"),
        (lambda d: d["modules"][0].update({"class": "ann2snn.io:save"}), "not a class"),
        (lambda d: _call_function(d, "builtins.eval"), "not a tensor, operator or math function"),
        (lambda d: _call_function(d, "torch.serialization.load"), "not a tensor, operator or math function"),
        (lambda d: graph_of(d)[1].update(op="call_method", target="numpy"), "not a tensor method"),
        (lambda d: graph_of(d)[1].update(op="call_module", target='conv1"); import os; ("'), "is not a .dotted. Python name"),
        (lambda d: graph_of(d)[1].update(name="x = 1; import os"), "is not a .dotted. Python name"),
        (lambda d: graph_of(d)[1].update(op="call_function", target={"$function": "getattr"}, args={"$tuple": [{"$node": "x"}, "__class__"]}), "not a tensor's data attribute"),
        (lambda d: d["modules"][0]["state"].update({"_code": "import os"}), "generated graph code"),
        (lambda d: d["modules"][0]["state"].update({"x": {"$pickle": "..."}}), "unknown tag"),
    ],
)
def test_load_refuses_a_tampered_description(tmp_path, edit, message):
    path = tmp_path / "snn.pt"
    ann2snn.save(snn(), path)
    with pytest.raises(ann2snn.ConversionError, match=message):
        ann2snn.load(tampered(path, edit))


class Custom(nn.Module):
    """A module of a package the safe format does not know (here: the tests)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def test_network_outside_the_safe_format_is_pickled_and_needs_trust(tmp_path):
    network = snn()
    network.extra = Custom()
    with pytest.warns(UserWarning, match="saved as a pickle.*test_security.Custom"):
        ann2snn.save(network, tmp_path / "snn.pt")
    with pytest.raises(ann2snn.ConversionError, match="pickled network.*trust_pickle=True"):
        ann2snn.load(tmp_path / "snn.pt")
    assert isinstance(ann2snn.load(tmp_path / "snn.pt", trust_pickle=True).extra, Custom)


# -- 3: --trust-pickle means what it says ---------------------------------------------------------------
def test_trust_pickle_reads_a_plain_pickle(tmp_path, capsys):
    with (tmp_path / "plain.pkl").open("wb") as file:
        pickle.dump(nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(60, 2)).eval(), file)
    code, out, err = run(capsys, tmp_path / "plain.pkl", "-o", tmp_path / "snn.pt", "--input-shape", "1,32")
    assert code == 2 and one_line_error(err, "--trust-pickle")
    code, out, err = run(capsys, tmp_path / "plain.pkl", "-o", tmp_path / "snn.pt", "--input-shape", "1,32", "--trust-pickle")
    assert code == 0, err


# -- 4, 5: outputs never destroy inputs or each other; all or nothing ------------------------------------
@pytest.fixture
def files(tmp_path) -> Path:
    torch.save(small_net().state_dict(), tmp_path / "weights.pt")
    torch.export.save(torch.export.export(small_net(), (torch.randn(2, 1, 32),)), tmp_path / "model.pt2")
    torch.save(torch.randn(8, 1, 32), tmp_path / "calib.pt")
    (tmp_path / "folder").mkdir()
    os.symlink(tmp_path / "model.pt2", tmp_path / "link.pt2")
    os.link(tmp_path / "calib.pt", tmp_path / "hardlink.pt")
    return tmp_path


@pytest.mark.parametrize(
    "extra, words",
    [
        (["-o", "{d}/model.pt2"], ["-o", "same file as the input"]),
        (["-o", "{d}/link.pt2"], ["-o", "same file as the input"]),
        (["-o", "{d}/./folder/../model.pt2"], ["same file as the input"]),
        (["-o", "{d}/snn.pt", "--report", "{d}/snn.pt"], ["--report", "same file as -o"]),
        (["-o", "{d}/snn.pt", "--report", "{d}/model.pt2"], ["--report", "same file as the input"]),
        (["-o", "{d}/snn.pt", "--draw", "{d}/calib.pt", "--calibrate", "{d}/calib.pt"], ["--draw", "same file as --calibrate"]),
        (["-o", "{d}/hardlink.pt", "--calibrate", "{d}/calib.pt"], ["-o", "same file as --calibrate"]),
        (["-o", "{d}/snn.pt", "--nir", "{d}/snn.pt", "--maxpool", "avg"], ["--nir", "same file as -o"]),
        (["-o", "{d}/folder"], ["-o", "is a folder"]),
        (["-o", "{d}/snn.pt", "--report", "{d}/folder"], ["--report", "is a folder"]),
        (["-o", "{d}/missing/snn.pt"], ["-o", "does not exist"]),
    ],
)
def test_outputs_checked_before_any_work(files, capsys, extra, words):
    before = {p.name: p.read_bytes() for p in files.iterdir() if p.is_file()}
    code, out, err = run(capsys, files / "model.pt2", *[a.format(d=files) for a in extra])
    assert code == 2 and one_line_error(err, *words), err
    assert out == ""  # refused before loading or converting anything
    assert {p.name: p.read_bytes() for p in files.iterdir() if p.is_file()} == before


def test_unwritable_output_folder(files, capsys, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == files / "folder" else real_access(path, mode))
    code, out, err = run(capsys, files / "model.pt2", "-o", files / "folder" / "snn.pt")
    assert code == 2 and one_line_error(err, "not writable")


def test_failed_late_output_leaves_nothing(files, capsys, monkeypatch):
    """The drawing fails after the SNN and report are staged: none of them appears."""
    import ann2snn.draw

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ann2snn.draw, "draw", broken)
    before = sorted(p.name for p in files.iterdir())
    code, out, err = run(capsys, files / "model.pt2", "-o", files / "snn.pt", "--report", files / "report.md", "--draw", files / "g.png")
    assert code == 2 and one_line_error(err, "--draw", "disk full")
    assert sorted(p.name for p in files.iterdir()) == before


# -- 6: a killed write --------------------------------------------------------------------------------
def test_killed_write_leaves_the_target_and_rerun_cleans_up(tmp_path):
    target = tmp_path / "out.pt"
    target.write_bytes(b"old")
    partial_path(target).write_bytes(b"half of a killed run")  # what a kill leaves
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.pt"]
    partial_path(target).write_bytes(b"half of a killed run")
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.pt"]


def test_cli_rerun_cleans_up_after_a_killed_run(files, capsys):
    staging = files / ".snn.pt.partial"
    staging.mkdir()
    (staging / "snn.pt").write_bytes(b"half")
    (staging / ".snn.pt.partial.pt").write_bytes(b"half of the inner write")
    code, out, err = run(capsys, files / "model.pt2", "-o", files / "snn.pt")
    assert code == 0, err
    assert not staging.exists() and not [p for p in files.iterdir() if "partial" in p.name]


# -- 15, 14: one line, not a traceback ------------------------------------------------------------------
@pytest.mark.parametrize(
    "option, value",
    [
        ("--batch-size", "0"),
        ("--batch-size", "-3"),
        ("--calibration-size", "0"),
        ("--T", "0"),
        ("--T", "1000000000"),
    ],
)
def test_nonsense_numbers_are_usage_errors(files, capsys, option, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(files / "model.pt2"), option, value])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and option in err and "Traceback" not in err


def test_bad_zoo_config_and_empty_or_integer_calibration(files, capsys):
    pytest.importorskip("ann2snn_zoo")
    code, out, err = run(capsys, files / "weights.pt", "--model", "m5", "--model-config", '{"n_channel": -1}', "-o", files / "a.pt")
    assert code == 2 and one_line_error(err, "cannot build zoo model 'm5'")
    (files / "empty.pt").write_bytes(b"")
    code, out, err = run(capsys, files / "model.pt2", "--calibrate", files / "empty.pt", "-o", files / "a.pt")
    assert code == 2 and one_line_error(err, "--calibrate", "not a tensor file")
    torch.save(torch.randint(0, 5, (8, 1, 32)), files / "ints.pt")
    code, out, err = run(capsys, files / "model.pt2", "--calibrate", files / "ints.pt", "-o", files / "a.pt")
    assert code == 2 and one_line_error(err, "the network takes float32; got int64")
    torch.save([torch.randn(8, 1, 32, dtype=torch.float64)], files / "doubles.pt")  # converted, as documented
    code, out, err = run(capsys, files / "model.pt2", "--calibrate", files / "doubles.pt", "-o", files / "a.pt")
    assert code == 0, err


def test_out_of_memory_is_one_line(files, capsys, monkeypatch):
    import sys

    def exhausted(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 1099511627776 bytes.")

    monkeypatch.setattr(sys.modules["ann2snn.profile"], "profile", exhausted)
    code, out, err = run(capsys, files / "model.pt2", "--T", "100000", "--profile", "--input-shape", "1,32", "-o", files / "a.pt")
    assert code == 2 and one_line_error(err, "out of memory", "--T 100000")
    assert not (files / "a.pt").exists()
