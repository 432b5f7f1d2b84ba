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
