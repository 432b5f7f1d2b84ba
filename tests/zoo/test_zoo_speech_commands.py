"""Speech Commands v0.02 loader on a tiny fixture in the standard on-disk layout."""

from collections import Counter

import pytest

from ann2snn_zoo import DataError, FrontEnd
from ann2snn_zoo.data import SpeechCommands, load_splits
from ann2snn_zoo.data.speech_commands import SILENCE, UNKNOWN, WORDS_10, WORDS_35
from zoo_test_utils import write_wav

FIXTURE_WORDS = ["yes", "no", "up", "bed", "cat", "marvin"]
SPEAKERS = ["0a1b2c3d", "1b2c3d4e", "2c3d4e5f", "3d4e5f60", "4e5f6071"]


@pytest.fixture(scope="module")
def speech_commands(tmp_path_factory):
    """Six words x five speakers x two takes, 16 kHz, 0.2 s; speaker 3 is val, speaker 4 test."""
    root = tmp_path_factory.mktemp("speech_commands_v0.02")
    val, test = [], []
    for w, word in enumerate(FIXTURE_WORDS):
        for s, speaker in enumerate(SPEAKERS):
            for take in range(2):
                path = write_wav(root / word / f"{speaker}_nohash_{take}.wav", 0.2, 16000, 200.0 + 50 * w)
                {3: val, 4: test}.get(s, []).append(path.relative_to(root).as_posix())
    (root / "validation_list.txt").write_text("\n".join(val) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    for name in ("white_noise", "running_tap"):
        write_wav(root / "_background_noise_" / f"{name}.wav", 12.0, 16000, 1000.0)
    (root / "_background_noise_" / "README.md").write_text("noise")
    return root


def test_35_word_task_follows_the_split_lists(speech_commands):
    splits = {s: SpeechCommands(speech_commands, s, task=35) for s in ("train", "val", "test")}
    assert {s: len(d) for s, d in splits.items()} == {"train": 36, "val": 12, "test": 12}
    assert splits["train"].classes == WORDS_35 and splits["train"].n_classes == 35
    assert {c.speaker for c in splits["val"].clips} == {SPEAKERS[3]}
    assert {c.speaker for c in splits["test"].clips} == {SPEAKERS[4]}
    for clip in splits["train"].clips:
        assert WORDS_35[clip.label] == clip.path.parent.name


def test_12_class_task_has_unknown_and_silence(speech_commands):
    train = SpeechCommands(speech_commands, "train", task=12, unknown_fraction=0.5, silence_fraction=0.25)
    assert train.classes == WORDS_10 + [UNKNOWN, SILENCE]
    counts = Counter(train.classes[y] for y in train.labels)
    # 18 clips of yes/no/up; unknown: half as many (of 18 bed/cat/marvin); silence: a quarter as many.
    assert counts == {"yes": 6, "no": 6, "up": 6, UNKNOWN: 9, SILENCE: 5}
    unknown = [c for c in train.clips if c.label == train.classes.index(UNKNOWN)]
    assert {c.path.parent.name for c in unknown} <= {"bed", "cat", "marvin"}


def test_silence_is_cut_from_each_splits_own_stretch_of_noise(speech_commands):
    stretches = {"train": (0, 0.8), "val": (0.8, 0.9), "test": (0.9, 1.0)}
    for split, (low, high) in stretches.items():
        data = SpeechCommands(speech_commands, split, task=12, silence_fraction=1.0)
        silence = [c for c in data.clips if c.label == data.classes.index(SILENCE)]
        assert silence and all(c.path.parent.name == "_background_noise_" for c in silence)
        total = 12 * 16000
        assert all(low * total <= c.start and c.start + c.frames <= high * total for c in silence)
        assert all(c.frames == 16000 for c in silence)


def test_12_class_task_is_deterministic_for_a_seed(speech_commands):
    def clips(seed):
        return SpeechCommands(speech_commands, "train", task=12, unknown_fraction=0.5, seed=seed).clips

    assert clips(3) == clips(3) and clips(3) != clips(4)


def test_items_through_load_splits(speech_commands):
    splits = load_splits("speech_commands", speech_commands, task=12, silence_fraction=0.5)
    assert splits.n_classes == 12 and splits["test"].front_end.sample_rate == 16000
    x, y = splits["test"][len(splits["test"]) - 1]
    assert x.shape == (1, 40, 101) and splits.classes[y] == SILENCE
    waveforms = load_splits("speech_commands", speech_commands, FrontEnd(sample_rate=16000, kind="waveform"))
    assert waveforms["val"][0][0].shape == (1, 16000)


def test_bad_layouts_are_named(speech_commands, tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'missing'}.*one folder of WAV files per word"):
        SpeechCommands(tmp_path / "missing")
    with pytest.raises(DataError, match=f"no word folders with WAV files in {tmp_path}"):
        SpeechCommands(tmp_path)
    write_wav(tmp_path / "yes" / "aaaa_nohash_0.wav")
    with pytest.raises(DataError, match="missing split list .*validation_list.txt"):
        SpeechCommands(tmp_path)
    (tmp_path / "validation_list.txt").write_text("")
    (tmp_path / "testing_list.txt").write_text("")
    assert len(SpeechCommands(tmp_path, task=35)) == 1
    with pytest.raises(DataError, match="_background_noise_"):
        SpeechCommands(tmp_path, task=12)
