"""The study's models (Eve-ning/snn_voice, reimplemented in zoo.models.study) and the 4 kHz front end."""

import re
import warnings

import pytest
import torch
import torch.fx

import ann2snn
import ann2snn_zoo as zoo

STUDY = ["study_m5", "study_piczak", "study_hjh", "m5_4k"]
#: Small versions for the conversion tests (the defaults are converted once, below).
SMALL = {"study_m5": dict(width=8), "study_piczak": dict(filters=8, hidden=32), "study_hjh": {}, "m5_4k": dict(n_channel=8)}


def test_registry_groups():
    assert zoo.names("study") == STUDY
    assert zoo.names("all") == zoo.names() + STUDY and not set(STUDY) & set(zoo.names())
    with pytest.raises(ValueError, match="group"):
        zoo.names("mine")


def test_the_study_runs_at_4_khz():
    assert zoo.input_spec("study_m5") == zoo.InputSpec("waveform", (1, 4000), (("sample_rate", 4000),))
    assert zoo.input_spec("m5_4k").shape == (1, 4000) and zoo.create("m5_4k").conv1.stride == (8,)
    front_end = zoo.input_spec("study_piczak").front_end()
    assert (front_end.sample_rate, front_end.n_mels, front_end.fft_size, front_end.hop_length) == (4000, 60, 240, 120)
    assert front_end.output_shape == (1, 60, 34) == zoo.create("study_hjh").input_spec.shape
    assert zoo.input_spec("study_m5").front_end(sample_rate=8000).samples == 8000  # a setting like any other
    assert zoo.create("study_m5").input_spec.front_end().sample_rate == 4000


@pytest.mark.parametrize("name", STUDY)
def test_study_model_traces_and_gives_logits(name):
    model = zoo.create(name, n_classes=7, **SMALL[name]).eval()
    x = torch.randn(3, *model.input_spec.shape)
    torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), model(x))
    assert model(x).shape == (3, 7)


@pytest.mark.parametrize("name", STUDY[:3])
def test_docstring_parameter_count_is_right(name):
    model = zoo.create(name, n_classes=10)
    match = re.search(r"Parameters \(default config, 10 classes\): ([\d,]+)", type(model).__doc__)
    assert match and int(match[1].replace(",", "")) == sum(p.numel() for p in model.parameters())


def features(name: str, n: int = 8) -> torch.Tensor:
    """Synthetic words through the model's own front end (resampled from 8 kHz to 4 kHz)."""
    spec = zoo.input_spec(name)
    data = zoo.data.Synthetic("train", n_per_class=1, front_end=spec.front_end())
    x = torch.stack([data[i][0] for i in range(n)])
    assert x.shape[1:] == spec.shape
    return x


@pytest.mark.parametrize("name", STUDY)
def test_study_model_converts_and_step_mode_equals_layer_mode(name):
    torch.manual_seed(0)
    model = zoo.create(name, n_classes=10, **SMALL[name]).eval()
    x = features(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snn = ann2snn.convert(model, T=6, learn_tau=False, calibration=[x])
    assert not snn.report.by_action("analog"), snn.report  # converted unchanged, fully spiking
    assert sum(isinstance(m, ann2snn.SpikingNeuron) for m in snn.modules()) >= 2
    with torch.no_grad():
        layer = snn(x)
        snn.mode = "step"
        step = snn(x)
    assert layer.shape == (len(x), 10)
    torch.testing.assert_close(step, layer, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["study_m5", "study_hjh"])
def test_the_study_sized_models_convert(name):
    """The default sizes (the study's) convert too; the 25 M-parameter Piczak is left to the harness."""
    model = zoo.create(name, n_classes=10).eval()
    x = features(name, n=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snn = ann2snn.convert(model, T=2, learn_tau=False, calibration=[x])
    with torch.no_grad():
        assert snn(x).shape == (2, 10)


@pytest.mark.slow  # a tiny experiment per model (about 10 s)
def test_the_harness_runs_the_study_models_at_their_front_end(tmp_path):
    from ann2snn_zoo.harness import ExperimentConfig, run_experiment
    from ann2snn_zoo.harness.experiment import Experiment

    config = ExperimentConfig(
        dataset="synthetic", models=("study_hjh", "m5_4k"), out_dir=str(tmp_path / "run"), cnn_epochs=1, snn_epochs=1,
        from_scratch=False, zero_shot_T=(2,), lif_zero_shot_T=(2,), encoders=("direct",), finetune_T=2, max_batches=2,
        calibration_batches=1, batch_size=16, dataset_options={"n_per_class": 4}, model_options={"m5_4k": {"n_channel": 4}},
        progress=False, device="cpu",
    )  # fmt: skip
    assert Experiment(config, log=lambda _: None).front_end("m5_4k").sample_rate == 4000
    rows = run_experiment(config, log=lambda _: None)
    assert {r["model"] for r in rows if r["kind"] == "retrained"} == {"study_hjh", "m5_4k"}
