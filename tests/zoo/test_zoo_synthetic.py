"""The built-in synthetic word set: deterministic, balanced, split, and ready for the harness."""

from collections import Counter

import pytest
import torch

from ann2snn_zoo import Augment, FrontEnd
from ann2snn_zoo.data import Synthetic, load_splits
from ann2snn_zoo.data.synthetic import WORDS


def test_deterministic_for_a_seed():
    a, b = Synthetic("val", seed=5, n_per_class=3), Synthetic("val", seed=5, n_per_class=3)
    torch.testing.assert_close(a.waveforms, b.waveforms, rtol=0, atol=0)
    assert not torch.allclose(a.waveforms, Synthetic("val", seed=6, n_per_class=3).waveforms)


def test_splits_are_different_draws():
    val, test = Synthetic("val", n_per_class=2), Synthetic("test", n_per_class=2)
    assert not torch.allclose(val.waveforms, test.waveforms)


def test_balanced_and_sized():
    data = Synthetic("test")
    assert len(data) == 300 and data.n_classes == len(WORDS) == 10
    assert Counter(data.labels) == {label: 30 for label in range(10)}
    x, y = data[13]
    assert x.shape == (1, 40, 101) and y == 3


def test_clips_are_sound_like():
    waves = Synthetic("val", n_per_class=2).waveforms
    assert waves.shape == (20, 8000) and torch.isfinite(waves).all()
    assert (waves.std(1) > 0).all()


def test_bad_split_is_refused():
    with pytest.raises(ValueError, match="split"):
        Synthetic("dev")


def test_load_splits_synthetic():
    splits = load_splits("synthetic", front_end=FrontEnd(kind="waveform"), n_per_class=4)
    assert {k: len(v) for k, v in splits.items()} == {"train": 40, "val": 40, "test": 40}
    assert splits.n_classes == 10 and splits.classes == list(WORDS)
    assert splits["train"][0][0].shape == (1, 8000)
    with pytest.raises(KeyError, match="unknown data set"):
        load_splits("timit")
    with pytest.raises(ValueError, match="augment needs cached"):
        load_splits("synthetic", augment=Augment(), cached=False)
