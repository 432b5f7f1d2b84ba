"""Plugin subcommands of the ``ann2snn`` command (``CliPlugin.commands``): the zoo's ``ann2snn
train`` and ``ann2snn experiment``; and the missing-extra message of ``draw``."""

import sys

import pytest
import torch
from torch import nn

import ann2snn
from ann2snn import cli


class Echo(cli.CliPlugin):
    name = "echo"

    def __init__(self):
        self.calls = []

    def commands(self):
        return {"echo": ("print the arguments", self.run)}

    def run(self, argv):
        self.calls.append(argv)
        return 7


def test_a_plugin_command_gets_the_rest_of_the_command_line():
    plugin = Echo()
    assert cli.main(["echo", "--T", "8", "x"], plugins=[plugin]) == 7
    assert plugin.calls == [["--T", "8", "x"]]


def test_plugin_commands_are_listed_in_the_help(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["--help"], plugins=[Echo()])
    assert exit.value.code == 0
    assert "echo" in capsys.readouterr().out


def test_an_unknown_command_names_the_plugins_that_failed_to_load(monkeypatch, capsys):
    monkeypatch.setattr(cli, "installed_plugins", lambda: ([], ["zoo (ImportError: the audio model zoo needs torchaudio)"]))
    assert cli.main(["train"]) == cli.EXIT_ERROR
    assert "zoo (ImportError" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "experiment"])
def test_zoo_commands(command, capsys):
    from ann2snn_zoo.cli_plugins import ZooPlugin

    with pytest.raises(SystemExit) as exit:
        cli.main([command, "--help"], plugins=[ZooPlugin()])
    assert exit.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: ann2snn {command}")


def test_zoo_train_reports_a_user_error_on_one_line(tmp_path, capsys):
    from ann2snn_zoo.cli_plugins import ZooPlugin

    status = cli.main(["train", "--dataset", "fsdd", "--data-dir", str(tmp_path / "missing"), "--no-progress"], plugins=[ZooPlugin()])
    assert status == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_draw_without_matplotlib_names_the_extra(monkeypatch, tmp_path):
    from ann2snn.draw import draw

    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(1, 1, 8))
    snn = ann2snn.convert(model, T=4, calibration=[torch.randn(4, 1, 8)])
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ModuleNotFoundError, match=r"ann2snn\[plot\]"):
        draw(model, snn, tmp_path / "net.png")


# -- the zoo's checkpoints in ann2snn convert ------------------------------------------------------
def convert_zoo(capsys, *args: object) -> tuple[int, str, str]:
    """``ann2snn convert ARGS`` with the zoo's plugin: (exit status, stdout, stderr)."""
    from ann2snn_zoo.cli_plugins import ZooPlugin

    code = cli.main(["convert", *map(str, args)], plugins=[ZooPlugin()])
    out, err = capsys.readouterr()
    return code, out, err


def test_convert_takes_the_best_weights_of_a_training_checkpoint(tmp_path, capsys):
    """``ann2snn train`` reports and keeps early stopping's best weights: convert them, not the last epoch's."""
    zoo = pytest.importorskip("ann2snn_zoo")
    config = {"n_classes": 4, "n_channel": 4}
    best, last = (zoo.create("m5", **config).eval() for _ in range(2))
    with torch.no_grad():
        for p in last.parameters():
            p.add_(0.5)
    checkpoint = {"model": "m5", "config": config, "state_dict": last.state_dict(), "epoch": 2, "best_epoch": 0, "best_loss": 0.5, "best_state_dict": best.state_dict()}
    torch.save(checkpoint, tmp_path / "m5.pt")
    x = torch.randn(4, 1, 8000, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / "calib.pt")
    code, out, err = convert_zoo(capsys, tmp_path / "m5.pt", "--calibrate", tmp_path / "calib.pt", "--no-learn-tau", "--T", 4)
    assert code == 0, err
    assert "weights of epoch 1 of 3 trained, the best validation loss (0.5)" in out
    snn = ann2snn.load(tmp_path / "m5.snn.pt")
    with torch.no_grad():
        expected, other = (ann2snn.convert(model, T=4, learn_tau=False, calibration=[x])(x) for model in (best, last))
        assert torch.allclose(snn(x), expected, atol=1e-6) and not torch.allclose(snn(x), other, atol=1e-3)


def test_convert_takes_the_last_weights_when_the_checkpoint_has_no_best():
    from ann2snn_zoo.cli_plugins import checkpoint_weights

    last = {"w": torch.ones(1)}
    assert checkpoint_weights({"state_dict": last}) == (last, "")
    weights, which = checkpoint_weights({"state_dict": last, "epoch": 0, "best_epoch": -1, "best_state_dict": None})
    assert weights is last and which == "weights of epoch 1 of 1 trained, the last (the checkpoint records no best weights)"


@pytest.mark.parametrize("name", ["study_hjh", "m5_4k"])
def test_convert_reads_checkpoints_of_every_model_train_offers(name, tmp_path, capsys):
    zoo = pytest.importorskip("ann2snn_zoo")
    model = zoo.create(name, n_classes=10)
    torch.save({"model": name, "config": {"n_classes": 10}, "state_dict": model.state_dict()}, tmp_path / "cnn.pt")
    code, out, err = convert_zoo(capsys, tmp_path / "cnn.pt", "--T", 2)
    assert code == 0, err
    assert ann2snn.load(tmp_path / "cnn.snn.pt").input_shape == tuple(model.input_spec.shape)


def test_convert_help_lists_every_model_train_offers(capsys):
    zoo = pytest.importorskip("ann2snn_zoo")
    with pytest.raises(SystemExit):
        convert_zoo(capsys, "--help")
    help_text = " ".join(capsys.readouterr().out.split())
    assert all(name in help_text for name in zoo.names("all"))
