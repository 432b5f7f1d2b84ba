"""One check of --device for every tool (``train.device_problem``): what passes, and a one-line
reason naming the way out for what does not."""

import pytest
import torch

from ann2snn_zoo.harness.train import device_problem


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_cpu_and_auto_pass(no_gpu):
    assert device_problem("cpu") is None and device_problem("auto") is None


@pytest.mark.parametrize(
    "text, words",
    [
        ("gpu0", ["'gpu0' is not a device", "auto, cpu, cuda, cuda:N or mps"]),
        ("cuda", ["no usable CUDA GPU", "--device cpu (or auto)"]),
        ("cuda:3", ["no usable CUDA GPU"]),
        ("mps", ["MPS is not available", "--device cpu"]),
        ("meta", ["runs on auto, cpu, cuda, cuda:N or mps"]),
    ],
)
def test_unusable_devices_name_the_way_out(no_gpu, text, words):
    problem = device_problem(text)
    assert problem is not None and "\n" not in problem
    for word in words:
        assert word in problem, problem


def test_a_gpu_index_beyond_the_machine_names_the_range(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device_problem("cuda:1") is None
    assert "2 CUDA GPU(s), cuda:0 to cuda:1" in device_problem("cuda:2")


def test_a_tool_can_narrow_the_kinds(no_gpu):
    assert device_problem("cpu", kinds=("cpu", "cuda"), allow_auto=False) is None
    assert "'auto' is not a device; pass cpu, cuda or cuda:N" in device_problem("auto", kinds=("cpu", "cuda"), allow_auto=False)
    assert "runs on cpu, cuda or cuda:N" in device_problem("mps", kinds=("cpu", "cuda"), allow_auto=False)
