"""The time loop: layer mode equals step mode, streaming, T and mode changeable, encoders."""

import pytest
import torch

import ann2snn
from ann2snn.temporal import NeuronPool
from snn_test_nets import INPUT_SHAPE, ResidualConcatNet


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(12, *INPUT_SHAPE)


@pytest.mark.parametrize(
    "options",
    [
        dict(learn_tau=False),
        dict(learn_tau=True, tau=8.0),
        dict(learn_tau=False, per_channel=True, maxpool="avg"),
        dict(learn_tau=False, encoder="latency"),
    ],
    ids=["IF-gated", "LIF-learnable", "IF-per-channel-avgpool", "IF-latency"],
)
def test_layer_mode_equals_step_mode(data, options):
    torch.manual_seed(1)
    snn = ann2snn.convert(ResidualConcatNet().eval(), T=20, calibration=[data], **options)
    with torch.no_grad():
        snn.mode = "layer"
        layer = snn(data)
        snn.mode = "step"
        step = snn(data)
    assert layer.shape == (12, 4)
    assert torch.allclose(layer, step, atol=1e-5)
    assert layer.abs().sum() > 0


def test_streaming_steps_average_to_the_forward_output(data):
    snn = ann2snn.convert(ResidualConcatNet().eval(), T=10, learn_tau=False, calibration=[data], mode="step")
    assert snn.output_head == [("log_softmax", -1)]
    with torch.no_grad(), snn.without_head():  # the readout averages; the head applies after averaging
        whole = snn(data)
        snn.reset()
        streamed = torch.stack([snn.step(data) for _ in range(10)]).mean(0)
    assert torch.allclose(whole, streamed, atol=1e-6)


def test_T_and_mode_change_after_conversion(data):
    snn = ann2snn.convert(ResidualConcatNet().eval(), T=4, learn_tau=False, calibration=[data], percentile=99.9, correction="none")
    snn.T = 64
    snn.mode = "step"
    assert snn(data).shape == (12, 4)
    with pytest.raises(ann2snn.ConversionError, match="positive integer"):
        snn.T = 0
    with pytest.raises(ann2snn.ConversionError, match="mode"):
        snn.mode = "fast"


def test_rate_encoder_is_unbiased():
    encoder = ann2snn.Encoder("rate")
    encoder.scale.fill_(2.0)
    torch.manual_seed(0)
    x = torch.tensor([-1.5, -0.5, 0.0, 0.5, 1.5, 3.0])
    mean = encoder.sequence(x.expand(1, -1), 4000).mean(0)
    assert torch.allclose(mean, x.clamp(-2, 2), atol=0.1)


def test_latency_encoder_sends_one_spike_earlier_when_larger():
    encoder = ann2snn.Encoder("latency")
    x = torch.tensor([[1.0, 0.5, -0.9, 0.0]])
    spikes = encoder.sequence(x, 10)  # [10, 4]
    assert spikes.abs().sum(0).tolist() == [1.0, 1.0, 1.0, 0.0]
    first = spikes.abs().argmax(0)
    assert first[0] < first[2] < first[1]
    assert spikes[:, 2].sum() == -1.0


@pytest.mark.parametrize("learn_tau", [False, True])
def test_differentiable_and_inference_paths_agree(data, learn_tau):
    """Layer mode runs a differentiable loop when gradients are needed and an in-place loop (with
    the neuron applying the pool that reads it per step) otherwise; both compute the same numbers."""
    snn = ann2snn.convert(ResidualConcatNet().eval(), T=30, learn_tau=learn_tau, tau=50.0, calibration=[data])
    assert sum(isinstance(m, NeuronPool) for m in snn.network.modules()) == 3  # two gated max pools, one average pool
    trained = snn(data)
    assert trained.requires_grad
    with torch.no_grad():
        inferred = snn(data)
        snn.mode = "step"
        stepped = snn(data)
    assert torch.allclose(trained, inferred, atol=1e-6)
    assert torch.allclose(stepped, inferred, atol=1e-5)


def test_batch_chunks_change_neither_outputs_nor_gradients(data):
    """Layer mode may run the batch in chunks (for cache-sized tensors on CPU); every chunking
    gives the same outputs and the same gradients as one whole-batch pass."""
    snn = ann2snn.convert(ResidualConcatNet().eval(), T=16, learn_tau=True, tau=20.0, calibration=[data])
    results = {}
    for chunk in (12, 5, 1):
        snn.batch_chunk = chunk
        snn.zero_grad()
        out = snn(data)
        out.square().sum().backward()
        results[chunk] = (out.detach(), [p.grad.clone() for p in snn.parameters()])
    whole_out, whole_grads = results[12]
    for chunk in (5, 1):
        out, grads = results[chunk]
        assert torch.allclose(out, whole_out, atol=1e-6)
        assert all(torch.allclose(g, w, atol=1e-5) for g, w in zip(grads, whole_grads))
    assert any(g.abs().sum() > 0 for g in whole_grads)


def test_automatic_batch_chunk_follows_the_activation_budget(data, monkeypatch):
    from ann2snn import timeloop

    snn = ann2snn.convert(ResidualConcatNet().eval(), T=10, learn_tau=False, calibration=[data])
    assert snn.batch_chunk is None
    largest = snn._largest_activation_bytes(data[:1])
    assert largest >= 4 * torch.Size(INPUT_SHAPE).numel()  # at least the input itself
    monkeypatch.setattr(timeloop, "CHUNK_BYTES", 3 * snn.T * largest)
    assert snn.chunk_size(data) == 3
    monkeypatch.setattr(timeloop, "CHUNK_BYTES", 1)
    assert snn.chunk_size(data) == 1
    snn.batch_chunk = 7
    assert snn.chunk_size(data) == 7
    with pytest.raises(ann2snn.ConversionError, match="batch_chunk"):
        snn.batch_chunk = 0


def test_networks_saved_before_batch_chunking_still_run(data):
    snn = ann2snn.convert(ResidualConcatNet().eval(), T=8, learn_tau=False, calibration=[data])
    state = {k: v for k, v in snn.__getstate__().items() if k not in ("_batch_chunk", "_example_bytes")}
    old = ann2snn.SpikingNetwork.__new__(ann2snn.SpikingNetwork)
    old.__setstate__(state)
    with torch.no_grad():
        assert old.batch_chunk is None and torch.allclose(old(data), snn(data), atol=1e-6)
