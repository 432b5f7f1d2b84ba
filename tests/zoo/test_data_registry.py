"""The data set registry (``zoo.data.registry``): adding a data set is its class plus one entry,
and every command line, ``load_splits``, the source check and the front ends follow from it."""

import sys
from pathlib import Path

import pytest
import torch

import ann2snn_zoo as zoo
from ann2snn_zoo.data import registry
from ann2snn_zoo.data.base import AudioDataset, Clip
from ann2snn_zoo.data.splits import check_source, load_splits, speakers
from ann2snn_zoo.errors import DataError
from ann2snn_zoo.harness import train_cli

ROOT = Path(__file__).resolve().parents[2]


class Tones(AudioDataset):
    """A folder-based toy data set at 16 kHz: two classes of two clips per split (the folder must exist)."""

    def __init__(self, root, split="train", seed=0, front_end=None, skip_bad=False, loud=False):
        if not Path(root).is_dir():
            raise DataError(f"data folder {root} does not exist")
        self.loud = loud
        super().__init__([Clip(label=i % 2, speaker=f"s{i}") for i in range(4)], ["low", "high"], front_end)

    def load(self, i):
        t = torch.arange(16000) / 16000
        return torch.sin(2 * torch.pi * (200 + 400 * self.clips[i].label) * t)[None] * (2.0 if self.loud else 0.5), 16000

    def item_key(self, i):
        return f"tones-{i}-{self.loud}"


@pytest.fixture
def tones(monkeypatch):
    entry = registry.DataSet("tones", Tones, 16000, "two tones (needs --data-dir)", speakers=lambda root: ["s0", "s1"])
    monkeypatch.setitem(registry.DATASETS, "tones", entry)
    return entry


def experiment_cli():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import experiment
    finally:
        sys.path.remove(str(ROOT / "tools"))
    return experiment


def test_one_entry_makes_a_data_set_everywhere(tones, tmp_path):
    splits = load_splits("tones", tmp_path, front_end=zoo.FrontEnd(kind="waveform", sample_rate=16000), cached=False, loud=True)
    assert {k: len(v) for k, v in splits.items()} == {"train": 4, "val": 4, "test": 4} and splits.classes == ["low", "high"]
    assert splits["train"].loud and splits["train"][0][0].shape == (1, 16000)
    assert load_splits("tones", tmp_path)["test"][0][0].shape == zoo.FrontEnd(sample_rate=16000).output_shape  # its default rate
    check_source("tones", tmp_path)
    with pytest.raises(DataError, match="tones needs data_dir"):
        check_source("tones")
    with pytest.raises(DataError, match="does not exist"):
        check_source("tones", tmp_path / "nowhere")
    assert speakers("tones", tmp_path) == ["s0", "s1"]
    assert train_cli.parse_args(["--dataset", "tones"]).dataset == "tones"
    assert "tones: two tones" in train_cli.build_parser().format_help()
    cli = experiment_cli()
    assert cli.config_from(cli.parse_args(["--dataset", "tones", "--data-dir", str(tmp_path)])).dataset == "tones"
    assert zoo.registry.front_end("vgg", "tones").sample_rate == 16000


def test_the_registry_holds_the_built_in_data_sets():
    assert registry.names() == ("synthetic", "fsdd", "speech_commands") == zoo.data.NAMES
    assert {n: registry.dataset(n).sample_rate for n in registry.names()} == zoo.data.splits.SAMPLE_RATES == {
        "synthetic": 8000, "fsdd": 8000, "speech_commands": 16000,
    }  # fmt: skip
    with pytest.raises(KeyError, match="unknown data set 'timit'; choose from synthetic, fsdd, speech_commands"):
        registry.dataset("timit")
    check_source("synthetic", skip_bad=True)  # generated: nothing to check, skip_bad ignored
    with pytest.raises(ValueError, match="defined for fsdd only, not 'speech_commands'"):
        speakers("speech_commands", "somewhere")


def test_a_model_s_front_end_settings_go_over_the_data_set_s_rate():
    assert zoo.registry.front_end("m5", "speech_commands") == zoo.FrontEnd(kind="waveform", sample_rate=16000)
    assert zoo.registry.front_end("vgg", "fsdd") == zoo.FrontEnd(kind="logmel", sample_rate=8000)
    study = zoo.registry.front_end("study_hjh", "speech_commands")
    assert study == zoo.input_spec("study_hjh").front_end() and study.sample_rate == 4000
    assert zoo.registry.front_end("study_m5", "fsdd", sample_rate=8000).sample_rate == 8000


def test_train_cli_builds_data_with_the_model_s_front_end(tmp_path, monkeypatch):
    seen = []

    class Stop(Exception):
        pass

    def load_splits(name, data_dir, front_end, **options):
        seen.append(front_end)
        raise Stop

    monkeypatch.setattr(zoo.data, "load_splits", load_splits)
    with pytest.raises(Stop):
        train_cli.main(["--model", "study_m5", "-o", str(tmp_path / "ck.pt"), "--no-progress"])
    assert seen == [zoo.input_spec("study_m5").front_end()] and seen[0].sample_rate == 4000
