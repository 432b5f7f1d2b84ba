"""tools/lowt.py's guards (zoo.harness.lowt): recorded settings, the folder lock, one-line errors,
other tools' folders, the plot's layout and single-seed cells; the measurement itself is
replaced by a stub (tests/harness/test_lowt.py runs it)."""

import json
import sys
from pathlib import Path

import pytest

import ann2snn_zoo.harness.lowt as lowt
from ann2snn_zoo.harness.lowt import METHODS, LowTConfig, lowt_tables, merge_rows, run_lowt
from ann2snn_zoo.harness.run_folder import RunFolderError, folder_lock

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import lowt as lowt_tool  # noqa: E402  (tools/lowt.py)


def _row(model, seed, method, T, top1):
    return dict(cell=f"{model}/s{seed}/{method}/T{T}", model=model, seed=seed, method=method, T=T, top1=top1, forward_s=0.01)


def _rows(models=("m5",), seeds=(0,)):
    rows = []
    for model in models:
        for seed in seeds:
            rows.append(dict(cell=f"{model}/s{seed}/cnn/relu", model=model, seed=seed, method="CNN", T=None, top1=99.0))
            rows += [_row(model, seed, method, T, 90.0 + seed) for method in METHODS for T in (2, 4)]
    return rows


@pytest.fixture
def measured(monkeypatch):
    """Replace the measurement by one that writes synthetic rows; returns the list of its calls."""
    calls = []

    def fake(config, out, log):
        calls.append(config)
        rows = _rows(config.models, config.seeds)
        (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (out / "qcfs" / "checkpoints").mkdir(parents=True, exist_ok=True)
        return rows

    monkeypatch.setattr(lowt, "_measure", fake)
    return calls


def _config(tmp_path, **settings):
    return LowTConfig(**{"dataset": "synthetic", "models": ("m5",), "seeds": (0,), "T": (4,), "out_dir": str(tmp_path / "out"), "device": "cpu", **settings})


def test_rerun_with_other_levels_is_refused_naming_the_setting(tmp_path, measured):
    run_lowt(_config(tmp_path, levels=8))
    assert json.loads((tmp_path / "out" / "config.json").read_text())["levels"] == 8
    with pytest.raises(RunFolderError, match=r"levels: 8 -> 4.*new --out"):
        run_lowt(_config(tmp_path, levels=4))
    with pytest.raises(RunFolderError, match=r"cnn_epochs: 20 -> 3"):
        run_lowt(_config(tmp_path, cnn_epochs=3))
    run_lowt(_config(tmp_path, levels=8, seeds=(0, 1), T=(2, 4), methods=("per-channel auto",)))  # more cells: fine
    assert len(measured) == 2


def test_folder_of_an_older_lowt_without_config_is_refused(tmp_path, measured):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.jsonl").write_text(json.dumps(_rows()[0]) + "\n")
    with pytest.raises(RunFolderError, match="no config.json.*new --out"):
        run_lowt(_config(tmp_path))
    assert not measured


def test_a_second_run_on_a_folder_in_use_is_refused(tmp_path, measured):
    out = tmp_path / "out"
    out.mkdir()
    with folder_lock(out):  # as a first run holds it
        with pytest.raises(RunFolderError, match="in use by another run"):
            run_lowt(_config(tmp_path))
    assert not measured
    run_lowt(_config(tmp_path))  # released: runs
    assert len(measured) == 1


def test_experiment_folder_is_refused_as_out_and_as_merge_input(tmp_path, measured):
    experiment = tmp_path / "out"
    experiment.mkdir()
    (experiment / "config.json").write_text(json.dumps({"dataset": "fsdd", "zero_shot_T": [1, 2]}))
    row = dict(cell="m5/s0/cnn/-/TNone/direct/learn_tau=None", model="m5", seed=0, kind="cnn", top1=99.0)
    (experiment / "results.jsonl").write_text(json.dumps(row) + "\n")
    before = (experiment / "results.jsonl").read_text()
    with pytest.raises(RunFolderError, match="tools/experiment.py, not of lowt.py"):
        run_lowt(_config(tmp_path))
    with pytest.raises(RunFolderError, match="tools/experiment.py, not of lowt.py; --merge takes"):
        merge_rows([experiment])
    (experiment / "config.json").unlink()  # no config: told apart by its rows
    with pytest.raises(RunFolderError, match="not an output folder of lowt.py"):
        merge_rows([experiment])
    assert (experiment / "results.jsonl").read_text() == before and not measured


def test_merge_refuses_folders_of_other_levels(tmp_path, measured):
    run_lowt(_config(tmp_path, out_dir=str(tmp_path / "a"), levels=8))
    run_lowt(_config(tmp_path, out_dir=str(tmp_path / "b"), levels=4))
    run_lowt(_config(tmp_path, out_dir=str(tmp_path / "c"), levels=8, seeds=(1,)))
    assert {r["seed"] for r in merge_rows([tmp_path / "a", tmp_path / "c"])} == {0, 1}
    with pytest.raises(RunFolderError, match="levels: 8 -> 4"):
        merge_rows([tmp_path / "a", tmp_path / "b"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data-dir", "{tmp}/nonexist"], "data folder"),
        (["--data-dir", "{data}", "--out", "{tmp}/afile"], "is a file, not a folder"),
        (["--data-dir", "{data}", "--out", "{tmp}/afile/sub"], "is a file, not a folder"),
        (["--data-dir", "{data}", "--device", "foo"], "--device 'foo' is not a device; pass auto, cpu, cuda, cuda:N or mps"),
        (["--data-dir", "{data}", "--models", "piczak"], "no QCFS variant"),
        (["--data-dir", "{data}", "--out", "{data}/runs"], "inside the data folder"),
        (["--merge", "{tmp}/nonexist"], "does not exist"),
    ],
)
def test_bad_input_is_one_error_line_exit_2_and_creates_nothing(tmp_path, capsys, measured, args, message):
    data = tmp_path / "fsdd"
    data.mkdir()
    for digit in range(10):
        (data / f"{digit}_jackson_0.wav").write_bytes(b"")
    (tmp_path / "afile").write_text("keep")
    before = sorted(tmp_path.rglob("*"))
    argv = [a.format(tmp=tmp_path, data=data) for a in args]
    argv += [] if "--out" in argv else ["--out", str(tmp_path / "new")]
    assert lowt_tool.main([*argv, "--models" if "--models" not in argv else "--seeds", *(["m5"] if "--models" not in argv else ["0"]), "--T", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert sorted(tmp_path.rglob("*")) == before and (tmp_path / "afile").read_text() == "keep"
    assert not measured


def test_cuda_without_a_gpu_is_one_error(tmp_path, monkeypatch, measured):
    monkeypatch.setattr(lowt.torch.cuda, "is_available", lambda: False)
    with pytest.raises(lowt.LowTError, match="no usable CUDA GPU.*--device cpu"):
        run_lowt(_config(tmp_path, device="cuda"))
    assert not (tmp_path / "out").exists()


def test_unknown_model_is_an_argparse_choice(capsys):
    with pytest.raises(SystemExit) as exit:
        lowt_tool.main(["--data-dir", "x", "--models", "m6"])
    assert exit.value.code == 2 and "invalid choice: 'm6'" in capsys.readouterr().err


def test_single_seed_cells_have_no_spread_and_several_seeds_do():
    one = lowt_tables(_rows(seeds=(0,)), (2, 4))
    assert "±" not in one and "| m5 | CNN (ReLU), 1 seed | 99.0 | 99.0 |" in one and "| m5 | per-channel auto | 90.0 | 90.0 |" in one
    two = lowt_tables(_rows(seeds=(0, 1)), (2, 4))
    assert "| m5 | CNN (ReLU), 2 seeds | 99.0 ± 0.0 |" in two and "| m5 | per-channel auto | 90.5 ± 0.7 |" in two


@pytest.mark.parametrize("models", [("m5",), ("m5", "vgg", "resnet")])
def test_plot_title_legend_and_labels_lie_inside_the_figure(tmp_path, monkeypatch, models):
    figures = []
    monkeypatch.setattr(lowt, "save_figure", lambda fig, path, dpi: figures.append(fig))
    rows = _rows(models)
    rows += [_row(m, 0, peer, 4, 80.0) for m in models for peer in lowt.peers.PEERS]  # the longest labels too
    title = "FSDD official split: zero-shot SNN accuracy against T (each point: mean ± sd over the seeds it has, up to 3 seeds)"
    lowt.plot_lowt(rows, (2, 4), tmp_path / "lowt.png", title)
    (fig,) = figures
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = fig.bbox
    legend = fig.legends[0].get_window_extent(renderer)
    for box in [legend, fig._suptitle.get_window_extent(renderer), *(ax.get_tightbbox(renderer) for ax in fig.axes)]:
        assert frame.x0 - 1 <= box.x0 and box.x1 <= frame.x1 + 1 and frame.y0 - 1 <= box.y0 and box.y1 <= frame.y1 + 1, (box, frame)
    assert all(legend.y1 <= ax.get_tightbbox(renderer).y0 for ax in fig.axes)  # the legend covers no axis label
    assert len(fig.legends[0].get_texts()) == 2 + len(METHODS) + len(lowt.peers.PEERS)
