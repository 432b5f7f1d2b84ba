"""Front end, augmentation and the feature cache."""

import math

import pytest
import torch

from ann2snn_zoo import Augment, FrontEnd
from ann2snn_zoo.augment import shift
from ann2snn_zoo.data import CachedFeatures, Synthetic
from ann2snn_zoo.frontend import fit_length


def tone(seconds: float, sample_rate: int, freq: float = 440.0) -> torch.Tensor:
    t = torch.arange(round(seconds * sample_rate)) / sample_rate
    return 0.3 * torch.sin(2 * math.pi * freq * t)


def test_default_logmel_shape_and_range():
    front_end = FrontEnd()
    assert (front_end.fft_size, front_end.hop_length) == (256, 80)
    x = front_end(tone(0.5, 8000), 8000)
    assert x.shape == front_end.output_shape == (1, 40, 101)
    assert abs(x.mean()) < 1e-4 and x.std() == pytest.approx(1.0, abs=1e-4)


def test_16khz_defaults_scale_with_the_rate():
    front_end = FrontEnd(sample_rate=16000, n_mels=64)
    assert (front_end.fft_size, front_end.hop_length) == (512, 160)
    assert front_end(tone(1.0, 16000), 16000).shape == (1, 64, 101)


def test_silence_maps_to_zero():
    assert FrontEnd()(torch.zeros(4000), 8000).abs().max() == 0


def test_waveform_is_mono_resampled_normalised_and_centred():
    front_end = FrontEnd(kind="waveform")
    stereo_16k = torch.stack([tone(0.5, 16000), tone(0.5, 16000)])
    x = front_end(stereo_16k, 16000)
    assert x.shape == (1, 8000)
    assert x.abs().max() == pytest.approx(1.0, abs=1e-3)
    assert x[0, :2000].abs().max() == 0 and x[0, -2000:].abs().max() == 0  # 0.5 s centred in 1 s
    expected = FrontEnd(kind="waveform")(tone(0.5, 8000), 8000)
    torch.testing.assert_close(x[0, 2100:5900], expected[0, 2100:5900], atol=0.01, rtol=0)


def test_fit_length_pads_and_crops_the_centre():
    assert fit_length(torch.arange(4.0), 8).tolist() == [0, 0, 0, 1, 2, 3, 0, 0]
    assert fit_length(torch.arange(10.0), 4).tolist() == [3, 4, 5, 6]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="kind"):
        FrontEnd(kind="mfcc")
    with pytest.raises(ValueError, match="normalize"):
        FrontEnd(normalize="max")


def test_shift_fills_with_zeros():
    x = torch.arange(1.0, 6.0)
    assert shift(x, 2).tolist() == [0, 0, 1, 2, 3]
    assert shift(x, -2).tolist() == [3, 4, 5, 0, 0]


def test_augment_changes_items_but_not_shapes():
    torch.manual_seed(0)
    x = FrontEnd(kind="waveform")(tone(0.5, 8000), 8000)
    noisy = Augment(shift_s=0.1, noise_snr_db=(10.0, 10.0)).waveform(x, 8000)
    assert noisy.shape == x.shape and not torch.equal(noisy, x)
    spec = FrontEnd()(torch.randn(8000), 8000)
    assert (spec != 0).all()
    masked = [Augment(shift_s=0, freq_mask=10, time_mask=20).spectrogram(spec) for _ in range(5)]
    assert all(m.shape == spec.shape for m in masked) and any((m == 0).any() for m in masked)  # masked to the mean


@pytest.fixture(scope="module")
def small_synthetic() -> Synthetic:
    return Synthetic("val", n_per_class=2)


def test_cache_matches_the_uncached_data_set(small_synthetic):
    cached = CachedFeatures(small_synthetic)
    assert len(cached) == 20 and cached.labels == small_synthetic.labels and cached.n_classes == 10
    for i in (0, 7):
        x, y = cached[i]
        torch.testing.assert_close(x, small_synthetic[i][0])
        assert y == small_synthetic[i][1]


def test_cache_with_waveform_augmentation_varies_per_draw(small_synthetic):
    cached = CachedFeatures(small_synthetic, Augment(shift_s=0.2, freq_mask=5))
    assert cached.stores_waveforms and cached.data.shape == (20, 1, 8000)
    first, second = cached[3][0], cached[3][0]
    assert first.shape == (1, 40, 101) and not torch.equal(first, second)


def test_disk_cache_is_written_once_and_keyed_by_settings(small_synthetic, tmp_path):
    first = CachedFeatures(small_synthetic, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1 and first.key() in files[0].name
    torch.testing.assert_close(CachedFeatures(small_synthetic, cache_dir=tmp_path).data, first.data)
    small_synthetic.front_end = FrontEnd(n_mels=32)
    try:
        CachedFeatures(small_synthetic, cache_dir=tmp_path)
    finally:
        small_synthetic.front_end = FrontEnd()
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_truncated_disk_cache_is_rebuilt_with_a_warning(small_synthetic, tmp_path):
    first = CachedFeatures(small_synthetic, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.pt")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(UserWarning, match=rf"feature cache {path} .*rebuilding it"):
        again = CachedFeatures(small_synthetic, cache_dir=tmp_path)
    torch.testing.assert_close(again.data, first.data)
    torch.testing.assert_close(CachedFeatures(small_synthetic, cache_dir=tmp_path).data, first.data)
