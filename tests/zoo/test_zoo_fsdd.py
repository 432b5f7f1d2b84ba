"""FSDD on the shared copy, its splits, and the loaders' handling of bad input."""

import tarfile
import time
from collections import Counter

import pytest
import torch

from zoo_test_utils import write_wav
from ann2snn_zoo import DataError, FrontEnd
from ann2snn_zoo.data import FSDD, download_fsdd, load_splits

SPEAKERS = {"george", "jackson", "lucas", "nicolas", "theo", "yweweler"}


def test_all_3000_files_with_labels_and_speakers(fsdd_dir):
    everything = FSDD(fsdd_dir, split="all")
    assert len(everything) == 3000
    assert Counter(everything.labels) == {d: 300 for d in range(10)}
    assert {clip.speaker for clip in everything.clips} == SPEAKERS
    for clip in everything.clips[::97]:
        digit, speaker, _ = clip.path.stem.split("_")
        assert (clip.label, clip.speaker) == (int(digit), speaker)
        assert everything.classes[clip.label] == digit


def test_official_split_is_2700_300(fsdd_dir):
    train = FSDD(fsdd_dir, "train", val_fraction=0.0)
    test = FSDD(fsdd_dir, "test")
    assert (len(train), len(test)) == (2700, 300)
    assert all(int(c.path.stem.split("_")[2]) < 5 for c in test.clips)
    assert all(int(c.path.stem.split("_")[2]) >= 5 for c in train.clips)


def test_validation_is_carved_from_train_by_seed(fsdd_dir):
    train, val = FSDD(fsdd_dir, "train", seed=1), FSDD(fsdd_dir, "val", seed=1)
    assert (len(train), len(val)) == (2430, 270)
    assert Counter(val.labels) == {d: 27 for d in range(10)}
    assert not {c.path for c in train.clips} & {c.path for c in val.clips}
    assert [c.path for c in FSDD(fsdd_dir, "val", seed=1).clips] == [c.path for c in val.clips]
    assert [c.path for c in FSDD(fsdd_dir, "val", seed=2).clips] != [c.path for c in val.clips]


def test_speaker_held_out_split_has_no_leak(fsdd_dir):
    splits = {s: FSDD(fsdd_dir, s, test_speaker="theo") for s in ("train", "val", "test")}
    assert {c.speaker for c in splits["test"].clips} == {"theo"}
    assert len(splits["test"]) == 500 and len(splits["train"]) + len(splits["val"]) == 2500
    assert "theo" not in {c.speaker for s in ("train", "val") for c in splits[s].clips}
    with pytest.raises(DataError, match="speakers: george"):
        FSDD(fsdd_dir, "test", test_speaker="nobody")


def test_items_are_features_and_labels(fsdd_dir):
    test = FSDD(fsdd_dir, "test", front_end=FrontEnd(kind="waveform"))
    x, y = test[0]
    assert x.shape == (1, 8000) and x.dtype == torch.float32 and y == test.clips[0].label


def test_load_splits_fsdd(fsdd_dir):
    splits = load_splits("fsdd", fsdd_dir / "recordings", cached=False)
    assert {k: len(v) for k, v in splits.items()} == {"train": 2430, "val": 270, "test": 300}
    assert splits.n_classes == 10 and splits["val"][0][0].shape == (1, 40, 101)


def test_missing_folder_names_the_path_and_layout(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'nowhere'}.*digit.*speaker.*index"):
        FSDD(tmp_path / "nowhere")
    with pytest.raises(DataError, match="needs data_dir"):
        load_splits("fsdd")


def test_empty_folder_names_the_path_and_layout(tmp_path):
    (tmp_path / "recordings").mkdir()
    (tmp_path / "recordings" / "README.txt").write_text("no audio here")
    with pytest.raises(DataError, match=f"no FSDD recordings in {tmp_path / 'recordings'}.*digit"):
        FSDD(tmp_path, split="all")


@pytest.fixture
def folder_with_bad_file(tmp_path):
    for digit in range(3):
        write_wav(tmp_path / f"{digit}_alice_7.wav")
    good = (tmp_path / "0_alice_7.wav").read_bytes()
    (tmp_path / "1_alice_8.wav").write_bytes(good[:1000])  # data cut short
    (tmp_path / "2_alice_8.wav").write_bytes(good[:30])  # header cut short
    return tmp_path


def test_truncated_wav_is_named(folder_with_bad_file):
    data = FSDD(folder_with_bad_file, split="all")
    paths = [c.path.name for c in data.clips]
    with pytest.raises(DataError, match="truncated WAV file .*1_alice_8.wav"):
        data[paths.index("1_alice_8.wav")]
    with pytest.raises(DataError, match="cannot read WAV file .*2_alice_8.wav"):
        data[paths.index("2_alice_8.wav")]


def test_skip_bad_drops_unreadable_files_with_a_warning(folder_with_bad_file):
    with pytest.warns(UserWarning, match="skipped 2 unreadable WAV file"):
        data = FSDD(folder_with_bad_file, split="all", skip_bad=True)
    assert len(data) == 3 and all(x.shape == (1, 40, 101) for x, _ in data)


def test_stereo_and_other_rates_are_mixed_down_and_resampled(tmp_path):
    write_wav(tmp_path / "4_bob_1.wav", seconds=0.5, sample_rate=8000)
    write_wav(tmp_path / "4_bob_2.wav", seconds=0.5, sample_rate=22050, channels=2)
    data = FSDD(tmp_path, split="all", front_end=FrontEnd(kind="waveform"))
    mono, stereo = data[0][0], data[1][0]
    assert stereo.shape == mono.shape == (1, 8000)
    torch.testing.assert_close(stereo[:, 2100:5900], mono[:, 2100:5900], atol=0.01, rtol=0)


def test_download_fails_at_once_when_offline(tmp_path):
    start = time.perf_counter()
    with pytest.raises(DataError, match="could not download FSDD.*offline"):
        download_fsdd(tmp_path, url="http://127.0.0.1:9/fsdd.tar.gz", timeout_s=2.0)
    assert time.perf_counter() - start < 5.0


def test_download_unpacks_the_release_archive(tmp_path):
    release = tmp_path / "free-spoken-digit-dataset-1.0.10"
    write_wav(release / "recordings" / "5_carol_0.wav")
    archive = tmp_path / "v1.0.10.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(release, arcname=release.name)
    recordings = download_fsdd(tmp_path / "data", url=archive.as_uri())
    assert recordings == tmp_path / "data" / "recordings"
    assert [c.label for c in FSDD(tmp_path / "data", split="all").clips] == [5]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["recordings"]


def test_wrongly_named_wav_files_are_counted_in_a_warning(tmp_path):
    write_wav(tmp_path / "3_alice_0.wav")
    for name in ("3-alice-1.wav", "three_alice_2.wav", "3_alice.WAV"):
        write_wav(tmp_path / name)
    (tmp_path / "README.txt").write_text("not audio: not counted")
    with pytest.warns(UserWarning, match=rf"skipped 3 WAV file\(s\) in {tmp_path} not named .*digit.*speaker.*index.*e\.g\. 3-alice-1\.wav"):
        data = FSDD(tmp_path, split="all")
    assert [c.path.name for c in data.clips] == ["3_alice_0.wav"]
