"""Rendering of the conversion report: one table renderer (``ConversionReport.to_text``, also
``str``), sources relative to the model's package or the current directory, names never cut."""

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import ann2snn
from ann2snn.report import ConversionReport, _clip_code, short_path, short_source

ROOT = Path(__file__).resolve().parents[1]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 3)
        self.a_rather_long_pooling_module_name = nn.MaxPool1d(2)
        self.fc = nn.Linear(12, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a_rather_long_pooling_module_name(F.relu(self.conv(x)))  # a long line of code, longer than the table's source column
        return self.fc(torch.flatten(x, 1))


def test_sources_are_relative_to_the_current_directory(monkeypatch):
    monkeypatch.chdir(ROOT)
    snn = ann2snn.convert(Net().eval(), T=4, calibration=[torch.randn(4, 1, 8)])
    text = str(snn.report)
    assert "tests/test_report.py:" in text and str(ROOT) not in text
    assert str(ROOT) not in snn.report.to_markdown()
    assert all(str(ROOT) in e.source for e in snn.report.entries if e.source.count(".py:"))  # the report keeps the full path


def test_sources_in_a_package_are_relative_to_the_package():
    assert short_path(str(ROOT / "ann2snn" / "passes" / "pooling.py")) == "ann2snn/passes/pooling.py"
    assert short_source(f"module `x`, {ROOT / 'ann2snn' / 'io.py'}:12: `y = f(x)`") == "module `x`, ann2snn/io.py:12: `y = f(x)`"
    assert short_path("<eval_with_key>.3") == "<eval_with_key>.3" and short_path("relative/file.py") == "relative/file.py"
    outside = os.path.join(os.sep, "nowhere", "model.py")
    assert short_path(outside) == outside  # neither in a package nor below the current directory


def test_names_are_never_cut_and_long_code_is_cut_after_a_whole_word(monkeypatch):
    monkeypatch.chdir(ROOT)
    snn = ann2snn.convert(Net().eval(), T=4, calibration=[torch.randn(4, 1, 8)])
    text = snn.report.to_text()
    for entry in snn.report.entries:
        assert entry.node in text and entry.before in text and entry.after in text
    assert "`a_rather_long_pooling_module_name`" in text
    clipped = _clip_code("m.py:3: `alpha_beta = gamma_delta(epsilon_zeta) + theta_iota(kappa)`", 40)
    assert clipped == "m.py:3: `alpha_beta = gamma_delta(...`"  # not "gamma_delta(eps..."


def test_to_text_leaves_warnings_out_on_request():
    report = ConversionReport()
    report.add("relu", "F.relu", "SpikingNeuron `relu_neuron`", "spiking")
    report.warn("something to know")
    assert "warning: something to know" in str(report)
    assert "warning" not in report.to_text(warnings=False)
    assert report.to_text(warnings=False).splitlines()[0].split() == ["node", "before", "after", "threshold", "source"]
