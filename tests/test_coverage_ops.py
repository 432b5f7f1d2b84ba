"""Issue 13: what users bring converts. Linear and identity ops are carried, global and adaptive
max pooling is gated, every refusal is listed at once, an ignored input is refused, input sizes
can be left free, analog islands see rates and converge with T, the supported-ops table."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ann2snn
from ann2snn import ConversionError


def analog_output(snn: ann2snn.SpikingNetwork, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), snn.analog_mode():
        return snn.run_network(x)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-6))


def step_layer_and_limit(model: nn.Module, x: torch.Tensor, T: int = 512, **options) -> tuple[ann2snn.SpikingNetwork, float, float]:
    """Convert an IF network calibrated at the 100th percentile; return it, the largest step-mode
    vs layer-mode difference at T=16, and the relative error against the CNN at ``T``."""
    options = dict(learn_tau=False, calibration=[x], percentile=100.0, correction="none") | options
    snn = ann2snn.convert(model, T=16, **options)
    with torch.no_grad():
        layer = snn(x)
        snn.mode = "step"
        step = snn(x)
        snn.mode, snn.T = "layer", T
        error = relative_error(snn(x), model(x))
    return snn, float((layer - step).abs().max()), error


# -- 1. linear and identity ops carried ---------------------------------------------------------
class Linear1d(nn.Module):
    """An audio-style 1-D net through every linear op the issue names (and identities in eval)."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.ops import StochasticDepth

        self.conv = nn.Conv1d(1, 6, 5, stride=2)
        self.up = nn.ConvTranspose1d(6, 6, 4, stride=2, padding=1)
        self.depth = StochasticDepth(0.3, "row")
        self.upsample = nn.Upsample(scale_factor=2, mode="linear")
        self.reflect = nn.ReflectionPad1d(2)
        self.replicate = nn.ReplicationPad1d((1, 2))
        self.drops = nn.Sequential(nn.Dropout(0.2), nn.AlphaDropout(0.2), nn.FeatureAlphaDropout(0.1), nn.Dropout1d(0.1))
        self.conv2 = nn.Conv1d(6, 8, 3)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = F.relu(self.conv(x))
        x = self.depth(self.up(x))
        x = self.replicate(self.reflect(self.upsample(x)))
        x = F.interpolate(x, scale_factor=0.5, mode="nearest")
        x = F.pad(x, (2, 1), mode="reflect") + F.pad(x, (1, 2), mode="replicate")
        x = F.pad(x, (1, 1), value=0.25)
        x = F.relu(self.conv2(F.feature_alpha_dropout(self.drops(x), 0.1, self.training)))
        return self.fc(x.mean(-1))


class Linear2d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.pad = nn.ReflectionPad2d(1)
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.bilinear = nn.Upsample(size=(12, 12), mode="bilinear", align_corners=False)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.up(F.relu(self.conv(x)))
        x = F.relu(self.conv2(self.pad(x)))
        x = self.bilinear(x) + F.interpolate(x, size=(12, 12), mode="bicubic", align_corners=True)
        x = F.relu(nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"))
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("net, shape", [(Linear1d, (1, 40)), (Linear2d, (1, 6, 6))])
def test_linear_and_identity_ops_are_carried_exactly(net, shape):
    torch.manual_seed(0)
    model = net().eval()
    x = torch.randn(16, *shape)
    snn, step_vs_layer, error = step_layer_and_limit(model, x)
    assert not snn.report.analog
    assert torch.allclose(analog_output(snn, x), model(x), atol=1e-5)
    assert step_vs_layer < 1e-5
    assert error < 0.05, error


def test_identities_in_eval_are_removed_and_reported():
    snn = ann2snn.convert(Linear1d().eval(), learn_tau=False)
    dropped = sorted(e.before.split()[0] for e in snn.report.dropped)
    assert dropped == sorted(["AlphaDropout", "Dropout", "Dropout1d", "F.feature_alpha_dropout", "FeatureAlphaDropout", "StochasticDepth"]) or dropped == sorted(
        ["AlphaDropout", "Dropout", "Dropout1d", "F.feature_alpha_dropout", "FeatureAlphaDropout", "torchvision.stochastic_depth"]
    )
    names = {n.target for n in snn.network.graph.nodes}
    assert not any("dropout" in str(getattr(t, "__name__", t)) for t in names)


# -- 2. global and adaptive max pooling, gated by running spike count -------------------------
class GlobalMax1d(nn.Module):
    """Audio-style: convs, then global max pooling over time in every spelling."""

    def __init__(self, form: str) -> None:
        super().__init__()
        self.form = form
        self.conv1 = nn.Conv1d(1, 6, 5, stride=2)
        self.conv2 = nn.Conv1d(6, 8, 3)
        self.adaptive = nn.AdaptiveMaxPool1d(1)
        self.adaptive3 = nn.AdaptiveMaxPool1d(3)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = self.conv2(x)
        if self.form == "module":
            return self.fc(F.relu(self.adaptive(x)).flatten(1))  # swapped behind the ReLU
        x = F.relu(x)
        if self.form == "functional":
            return self.fc(F.adaptive_max_pool1d(x, 1).squeeze(-1))
        if self.form == "adaptive3":
            return self.fc(self.adaptive3(x).mean(-1))
        if self.form == "amax":
            return self.fc(torch.amax(x, dim=-1))
        if self.form == "method_amax":
            return self.fc(x.amax(2, keepdim=True).flatten(1))
        if self.form == "max_values":
            return self.fc(torch.max(x, dim=2).values)
        if self.form == "max_getitem":
            return self.fc(x.max(-1)[0])
        raise ValueError(self.form)


class GlobalMax2d(nn.Module):
    def __init__(self, form: str) -> None:
        super().__init__()
        self.form = form
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.pool = nn.AdaptiveMaxPool2d((2, 1))
        self.fc = nn.Linear(12 if form == "module" else 6, 2)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.conv(x))))
        if self.form == "module":
            return self.fc(self.pool(x).flatten(1))
        return self.fc(x.amax(dim=(2, 3)))


MAX_FORMS = ["module", "functional", "adaptive3", "amax", "method_amax", "max_values", "max_getitem"]


@pytest.mark.parametrize("form", MAX_FORMS)
def test_global_max_pooling_is_gated_and_converges(form):
    torch.manual_seed(1)
    model = GlobalMax1d(form).eval()
    x = torch.randn(16, 1, 48)
    snn, step_vs_layer, error = step_layer_and_limit(model, x)
    pools = snn.report.by_action("pool")
    assert len(pools) == 1 and "gated max pool" in pools[0].after
    assert not snn.report.analog
    assert torch.allclose(analog_output(snn, x), model(x), atol=1e-5)
    assert step_vs_layer < 1e-5
    assert error < 0.05, error


@pytest.mark.parametrize("form", ["module", "amax"])
def test_global_max_pooling_2d(form):
    torch.manual_seed(2)
    model = GlobalMax2d(form).eval()
    x = torch.randn(16, 1, 6, 6)
    snn, step_vs_layer, error = step_layer_and_limit(model, x, T=1024)
    assert step_vs_layer < 1e-5 and error < 0.05, (step_vs_layer, error)


def test_gated_global_max_beats_max_of_spikes_as_T_grows():
    """Gating converges; the max of each step's spikes (what the issue's peers do) does not."""
    torch.manual_seed(1)
    model = GlobalMax1d("amax").eval()
    x = torch.randn(32, 1, 48)
    snn = ann2snn.convert(model, T=32, learn_tau=False, calibration=[x], percentile=100.0, correction="none")
    errors = {}
    with torch.no_grad():
        for T in (32, 256):
            snn.T = T
            errors[T] = relative_error(snn(x), model(x))
    assert errors[256] < 0.6 * errors[32], errors


def test_max_with_indices_returns_the_gated_positions():
    class ArgMax(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(1, 4, 3)

        def forward(self, x):
            values, index = torch.max(F.relu(self.conv(x)), dim=-1)
            return values + 0 * index

    torch.manual_seed(0)
    model = ArgMax().eval()
    x = torch.randn(8, 1, 20)
    snn, step_vs_layer, error = step_layer_and_limit(model, x)
    assert step_vs_layer < 1e-5 and error < 0.05, (step_vs_layer, error)
    with pytest.raises(ConversionError, match="maxpool='gated'"):
        ann2snn.convert(model, learn_tau=False, maxpool="avg")


def test_global_max_with_maxpool_avg_becomes_a_mean():
    snn = ann2snn.convert(GlobalMax1d("amax").eval(), learn_tau=False, maxpool="avg", correction="none", calibration=[torch.randn(4, 1, 48)])
    (pool,) = snn.report.by_action("pool")
    assert "mean" in pool.after


def test_max_on_the_input_path_and_max_of_two_tensors_are_not_pools():
    class InputMax(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.out = nn.Linear(4, 2)

        def forward(self, x):  # [B, 4, 5]
            h = F.relu(self.fc(x.amax(-1)))
            return self.out(torch.max(h, self.fc(h)))

    with pytest.raises(ConversionError, match="torch.max"):
        ann2snn.convert(InputMax().eval(), learn_tau=False)
    snn = ann2snn.convert(InputMax().eval(), learn_tau=False, allow_analog=True)
    assert [e.after for e in snn.report.by_action("carried")] == ["kept: max pool on the input path, before any neuron"]


@pytest.mark.parametrize("form", ["module", "amax"])
def test_gated_global_max_trains_and_saves(form, tmp_path):
    torch.manual_seed(1)
    model = GlobalMax1d(form).eval()
    x = torch.randn(8, 1, 48)
    snn = ann2snn.convert(model, T=8, learn_tau=False, calibration=[x], percentile=100.0, correction="none")
    with torch.no_grad():
        expected = snn(x)
    out = snn(x)  # the differentiable path (neuron-fused gate with gradients) gives the same numbers
    assert torch.allclose(out, expected, atol=1e-5)
    out.sum().backward()
    assert snn.network.conv1.weight.grad.abs().sum() > 0
    ann2snn.save(snn, tmp_path / "net.snn.pt")
    loaded = ann2snn.load(tmp_path / "net.snn.pt")
    with torch.no_grad():
        assert torch.allclose(loaded(x), expected, atol=1e-6)


# -- 3. every refusal listed at once ------------------------------------------------------------
class ManyUnsupported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(4, 4, 3, padding=1) for _ in range(4))
        self.norm = nn.GroupNorm(2, 4)
        self.act = nn.Hardswish()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.act(self.convs[0](x))
        x = self.norm(F.relu(self.convs[1](x)))
        x = self.act(self.convs[2](x))
        gate = torch.sigmoid(x.mean(-1, keepdim=True))
        x = F.gelu(self.convs[3](x * gate))
        return self.fc(x.mean(-1))


def test_every_unsupported_op_is_listed_in_one_error():
    with pytest.raises(ConversionError) as info:
        ann2snn.convert(ManyUnsupported().eval())
    message = str(info.value)
    assert message.startswith("6 ops of the network have no spiking equivalent (5 kinds; all are listed)")
    for node in ("act", "act_1", "norm", "sigmoid", "mul", "gelu"):
        assert f"at node `{node}` (" in message
    assert "- Hardswish (2): a nonlinearity other than ReLU" in message
    assert "- GroupNorm (1): normalisation" in message and "use BatchNorm" in message
    assert "- operator.mul (1): a product of two activations" in message and "- F.gelu (1)" in message
    assert message.count("test_coverage_ops.py:") == 6  # every entry names its source line
    assert "allow_analog=True" in message and "Traceback" not in message


def test_a_single_refusal_reads_in_the_singular():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Tanh()).eval()
    with pytest.raises(ConversionError, match=r"^1 op of the network has no spiking equivalent \(1 kind; all are listed\):\n- Tanh \(1\)"):
        ann2snn.convert(model)


# -- 4. an input ignored after concrete_args is refused -----------------------------------------
class RankCheck(nn.Module):
    """torchaudio-ConvTasNet-style input check in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.dim() == 2:
            x = x.unsqueeze(1)
        return self.fc(F.relu(self.conv(x)).mean(-1))


def test_concrete_args_fixing_the_input_is_refused():
    x = torch.randn(3, 1, 20)
    with pytest.raises(ConversionError, match="cannot trace RankCheck.*if x.dim\\(\\) == 2.*never the input tensor"):
        ann2snn.convert(RankCheck().eval())
    with pytest.warns(UserWarning), pytest.raises(ConversionError) as info:  # fx warns about the specialisation
        ann2snn.convert(RankCheck().eval(), concrete_args={"x": x})
    message = str(info.value)
    assert "ignores its input `x`" in message and "concrete_args fixed the tensor argument 'x'" in message
    assert "never pass the input tensor" in message and "leaf_modules" in message


def test_a_network_that_returns_constants_is_refused():
    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(2))

        def forward(self, x):
            return self.bias.relu() * 2

    with pytest.raises(ConversionError, match="ignores its input `x`.*does not use it"):
        ann2snn.convert(Constant().eval())


def test_torchscript_module_is_refused_with_the_right_advice():
    scripted = torch.jit.script(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval())
    with pytest.raises(ConversionError, match="TorchScript module.*load_state_dict") as info:
        ann2snn.convert(scripted)
    assert "control flow" not in str(info.value)


def test_unused_optional_arguments_are_fine():
    class Optional_(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x, lengths=None):
            return self.fc(F.relu(x))

    snn = ann2snn.convert(Optional_().eval(), learn_tau=False, concrete_args={"lengths": None}, input_shape=(4,))
    assert snn(torch.randn(2, 4)).shape == (2, 2)


# -- 5. input sizes free where the network accepts them -----------------------------------------
class AnyLength(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 5, stride=2)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool1d(F.relu(self.conv(x)), 1).flatten(1))


def test_other_lengths_are_refused_naming_the_option_then_accepted():
    torch.manual_seed(0)
    model = AnyLength().eval()
    snn = ann2snn.convert(model, T=64, learn_tau=False, calibration=[torch.randn(8, 1, 64)], correction="none")
    short = torch.randn(2, 1, 40)
    with pytest.raises(ann2snn.InputShapeError) as info:
        snn(short)
    message = str(info.value)
    assert "takes [batch, 1, 64]" in message and "snn.input_shape = (1, None)" in message and "snn.input_shape = None" in message
    snn.input_shape = (1, None)
    with torch.no_grad():
        out = snn(short)
        assert out.shape == (2, 3) and torch.allclose(analog_output(snn, short), model(short), atol=1e-6)
        snn.mode = "step"
        assert torch.allclose(snn(short), out, atol=1e-5)
    with pytest.raises(ann2snn.InputShapeError, match=r"takes \[batch, 1, any\].*1 dimension per example, not 2; x.unsqueeze\(1\) adds the missing one"):
        snn(torch.randn(2, 40))  # the rank is still checked


def test_free_sizes_given_at_conversion_are_kept_by_calibration():
    snn = ann2snn.convert(AnyLength().eval(), T=8, learn_tau=False, calibration=[torch.randn(8, 1, 64)], correction="none", input_shape=(1, None))
    assert snn.input_shape == (1, None)
    with torch.no_grad():
        assert snn(torch.randn(3, 1, 100)).shape == (3, 3)


@pytest.mark.parametrize("form", ["module", "amax", "max_values"])
def test_gated_global_max_runs_in_time_chunks(form):
    torch.manual_seed(1)
    model = GlobalMax1d(form).eval()
    x = torch.randn(8, 1, 48)
    snn = ann2snn.convert(model, T=20, learn_tau=False, calibration=[x], percentile=100.0, correction="none")
    assert snn.time_chunks_supported()
    with torch.no_grad():
        whole = snn(x)
        snn.time_chunk = 7
        assert torch.allclose(snn(x), whole, atol=1e-5)


# -- 6. analog islands see rates and converge with T -------------------------------------------
class GroupNormNet(nn.Module):
    """The issue's net: conv -> ReLU -> conv -> GroupNorm -> ReLU (analog GroupNorm after spikes)."""

    def __init__(self, extra: str = "") -> None:
        super().__init__()
        self.extra = extra
        self.conv1 = nn.Conv1d(1, 8, 5, stride=2)
        self.conv2 = nn.Conv1d(8, 8, 3)
        self.norm = nn.GroupNorm(2, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = self.norm(self.conv2(x))
        if self.extra == "chain":  # GroupNorm -> GELU -> LeakyReLU: chained islands
            x = F.leaky_relu(F.gelu(x), 0.1)
        if self.extra == "gate":  # squeeze-excitation style product of two activations
            x = x * torch.sigmoid(x.mean(-1, keepdim=True))
        if self.extra == "maxpool":  # an adaptive max pool with indices kept analog
            x = F.adaptive_max_pool1d(x, 4, return_indices=True)[0]
        return self.fc(F.relu(x).mean(-1))


def island_errors(model: nn.Module, x: torch.Tensor, steps=(32, 256, 1024)) -> tuple[ann2snn.SpikingNetwork, dict[int, float]]:
    with pytest.warns(ann2snn.ConversionWarning, match="not purely spiking"):
        snn = ann2snn.convert(model, T=16, learn_tau=False, calibration=[x], percentile=100.0, correction="none", allow_analog=True)
    errors = {}
    with torch.no_grad():
        reference = model(x)
        for T in steps:
            snn.T = T
            errors[T] = relative_error(snn(x), reference)
    return snn, errors


@pytest.mark.parametrize("extra", ["", "chain", "gate", "maxpool"])
def test_analog_island_error_shrinks_with_T(extra):
    torch.manual_seed(0)
    model = GroupNormNet(extra).eval()
    x = torch.randn(32, 1, 64)
    snn, errors = island_errors(model, x)
    assert errors[256] <= 0.5 * errors[32], errors
    assert errors[1024] < 0.05, errors
    islands = [e for e in snn.report.analog if "firing rates" in e.after]
    assert islands and len(islands) == len(snn.report.analog)


def test_analog_island_structure_and_step_equals_layer():
    from ann2snn.temporal_ops import RateIncrement, RateMean

    torch.manual_seed(0)
    model = GroupNormNet("chain").eval()
    x = torch.randn(8, 1, 64)
    snn = ann2snn.convert(model, T=24, learn_tau=False, calibration=[x], percentile=100.0, correction="none", allow_analog=True)
    modules = list(snn.network.modules())
    # one running mean into the GroupNorm; the chained GELU and LeakyReLU read its rates directly
    assert sum(isinstance(m, RateMean) for m in modules) == 1
    assert sum(isinstance(m, RateIncrement) for m in modules) == 1
    assert torch.allclose(analog_output(snn, x), model(x), atol=1e-5)
    with torch.no_grad():
        layer = snn(x)
        snn.mode = "step"
        step = snn(x)
        snn.reset()
        streamed = torch.stack([snn.step(x) for _ in range(snn.T)]).mean(0)
        snn.mode = "layer"
        snn.time_chunk = 5
        chunked = snn(x)
    assert torch.allclose(layer, step, atol=1e-5)
    assert torch.allclose(streamed, layer, atol=1e-5)
    assert torch.allclose(chunked, layer, atol=1e-5)


def test_analog_island_time_average_is_f_of_rates_at_every_step():
    from ann2snn.temporal_ops import RateIncrement, RateMean

    mean, increment, f = RateMean(), RateIncrement(), torch.nn.GroupNorm(2, 4)
    spikes = (torch.rand(10, 3, 4, 5) < 0.3).float()
    outs = [increment(f(mean(s))) for s in spikes]
    for t in range(1, 11):
        average = torch.stack(outs[:t]).mean(0)
        assert torch.allclose(average, f(spikes[:t].mean(0)), atol=1e-5)
    mean.time_steps = increment.time_steps = 10  # layer mode: the same numbers at once
    layer = increment(f(mean(spikes.flatten(0, 1)))).unflatten(0, (10, -1))
    assert torch.allclose(layer, torch.stack(outs), atol=1e-5)


def test_analog_island_trains_and_saves(tmp_path):
    torch.manual_seed(0)
    model = GroupNormNet("gate").eval()
    x = torch.randn(8, 1, 64)
    snn = ann2snn.convert(model, T=8, learn_tau=True, calibration=[x], correction="none", allow_analog=True)
    out = snn(x)
    out.square().mean().backward()
    assert snn.network.norm.weight.grad is not None and snn.network.conv1.weight.grad.abs().sum() > 0
    ann2snn.save(snn, tmp_path / "island.snn.pt")
    loaded = ann2snn.load(tmp_path / "island.snn.pt")
    with torch.no_grad():
        assert torch.allclose(loaded(x), snn(x), atol=1e-6)


def test_analog_ops_on_the_input_path_stay_plain():
    class InputNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(16)
            self.fc = nn.Linear(16, 8)
            self.out = nn.Linear(8, 2)

        def forward(self, x):
            return self.out(F.relu(self.fc(self.norm(x))))

    with pytest.warns(ann2snn.ConversionWarning, match="LayerNorm `norm` at `norm`"):
        snn = ann2snn.convert(InputNorm().eval(), learn_tau=False, allow_analog=True, calibration=[torch.randn(8, 16)], correction="none")
    (entry,) = snn.report.analog
    assert "input path" in entry.after


# -- 7. the supported-ops table, generated from the registries -----------------------------------
def test_supported_ops_table_is_generated_and_up_to_date():
    from pathlib import Path

    from ann2snn import supported_ops
    from ann2snn.passes import supported

    table = supported_ops.markdown()
    written = (Path(__file__).parent.parent / "docs" / "supported_ops.md").read_text()
    assert written == table, "docs/supported_ops.md is stale: python -m ann2snn.supported_ops > docs/supported_ops.md"
    for name in (
        "`nn.ConvTranspose1d`",
        "`nn.ReflectionPad1d`",
        "`F.interpolate`",
        "`nn.AdaptiveMaxPool1d`",
        "`torch.amax`",
        "`torchvision.ops.StochasticDepth`",
        "`F.log_softmax`",
        "`Tensor.relu`",
        "`nn.BatchNorm1d`",
    ):
        assert name in table, name
    for function in supported.CARRIED_FUNCTIONS:  # every registry entry has a row
        assert f"`{supported_ops.function_name(function)}`" in table, function
    for method in supported.CARRIED_METHODS:
        assert f"`Tensor.{method}`" in table, method
    assert all(len(row) == 4 and all(row) for row in supported_ops.rows())


class InputPathIsland(nn.Module):
    """conv -> GroupNorm or LeakyReLU -> ReLU -> conv -> ReLU: the analog op reads the first conv
    of the input, before any neuron."""

    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = op
        self.conv1 = nn.Conv1d(1, 8, 5, stride=2)
        self.norm = nn.GroupNorm(2, 8)
        self.conv2 = nn.Conv1d(8, 8, 3)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(self.norm(x) if self.op == "norm" else F.leaky_relu(x, 0.1))
        return self.fc(F.relu(self.conv2(x)).mean(-1))


@pytest.mark.parametrize("op", ["norm", "leaky"])
def test_analog_op_reading_a_rate_encoded_input_converges_with_T(op):
    """Under rate encoding the input is random spikes at every step: an analog op on the input path
    must see their running mean (an island), or its error stays put as T grows (it did: 0.077 at
    T=32, 0.080 at T=256 for the GroupNorm)."""
    torch.manual_seed(0)
    model = InputPathIsland(op).eval()
    x = torch.randn(32, 1, 64)
    with pytest.warns(ann2snn.ConversionWarning, match="not purely spiking"):
        snn = ann2snn.convert(model, T=16, learn_tau=False, calibration=[x], percentile=100.0, correction="none", allow_analog=True, encoder="rate")
    (entry,) = snn.report.analog
    assert "firing rates" in entry.after
    errors = {}
    with torch.no_grad():
        reference = model(x)
        for T in (32, 256):
            snn.T = T
            torch.manual_seed(1)
            errors[T] = relative_error(snn(x), reference)
    assert errors[256] <= 0.5 * errors[32], errors
