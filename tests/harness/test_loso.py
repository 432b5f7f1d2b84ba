"""FSDD leave-one-speaker-out cross-validation: the folds, and the harness running one run per fold."""

from collections import Counter
from pathlib import Path

import pytest

import ann2snn_zoo as zoo
from ann2snn_zoo.data import FSDD
from ann2snn_zoo.data.splits import speaker_folds, speakers
from ann2snn_zoo.harness import ExperimentConfig
from ann2snn_zoo.harness import experiment as experiment_module
from ann2snn_zoo.harness.experiment import fold_configs, run_experiment
from ann2snn_zoo.harness.summary import summary_table

ROOT = Path(__file__).resolve().parents[2]
SHARED_FSDD = ROOT.parent / "shared" / "data" / "fsdd"
FAKE_SPEAKERS = ("ann", "bob", "cyd", "dan", "eve", "fay")


@pytest.fixture(scope="module")
def fake_fsdd(tmp_path_factory) -> Path:
    """Six speakers x ten digits x four takes of empty-named WAV files (folds list files, read no audio)."""
    root = tmp_path_factory.mktemp("fsdd")
    recordings = root / "recordings"
    recordings.mkdir()
    for speaker in FAKE_SPEAKERS:
        for digit in range(10):
            for take in range(4):
                (recordings / f"{digit}_{speaker}_{take}.wav").write_bytes(b"")
    return root


def check_folds(root: Path, expected_speakers: set[str], n_clips: int) -> None:
    folds = speaker_folds("fsdd", root)
    assert {f["test_speaker"] for f in folds} == expected_speakers and len(folds) == len(expected_speakers)
    tested = Counter()
    for fold in folds:
        sets = {split: FSDD(root, split, **fold) for split in ("train", "val", "test")}
        held = fold["test_speaker"]
        assert {c.speaker for c in sets["test"].clips} == {held}
        for split in ("train", "val"):
            assert held not in {c.speaker for c in sets[split].clips}, f"speaker {held} leaks into {split}"
        paths = [c.path for s in sets.values() for c in s.clips]
        assert len(paths) == len(set(paths)) == n_clips, "a clip is missing from the fold or in two of its splits"
        assert len(sets["test"]) == n_clips // len(expected_speakers)
        tested.update(c.path for c in sets["test"].clips)
    assert len(tested) == n_clips and set(tested.values()) == {1}, "every clip must be a test clip exactly once"


def test_speaker_folds_have_no_leak_and_test_every_clip_once(fake_fsdd):
    check_folds(fake_fsdd, set(FAKE_SPEAKERS), 6 * 10 * 4)


@pytest.mark.slow  # lists the 3,000 files 19 times (about 9 s on a busy machine)
def test_speaker_folds_of_the_real_fsdd():
    if not (SHARED_FSDD / "recordings").is_dir():
        pytest.skip(f"FSDD not found at {SHARED_FSDD}")
    check_folds(SHARED_FSDD, {"george", "jackson", "lucas", "nicolas", "theo", "yweweler"}, 3000)


def test_folds_only_for_fsdd(fake_fsdd):
    with pytest.raises(ValueError, match="fsdd only"):
        speakers("synthetic")


def test_one_run_per_fold_and_rows_tagged_with_their_fold(fake_fsdd, tmp_path, monkeypatch):
    config = ExperimentConfig(dataset="fsdd", data_dir=str(fake_fsdd), out_dir=str(tmp_path / "loso"), cross_validation="speaker")
    folds = fold_configs(config)
    assert [f.test_speaker for f in folds] == list(FAKE_SPEAKERS)
    assert len({f.out_dir for f in folds}) == 6 and all(Path(f.out_dir).parent == tmp_path / "loso" for f in folds)
    assert all(f.cross_validation is None for f in folds)

    seen = []

    def fake_run(self):  # one CNN row per fold, its accuracy by speaker
        seen.append(self.config.test_speaker)
        return [dict(cell="m5/s0/cnn", model="m5", seed=0, kind="cnn", top1=float(len(seen)))]

    monkeypatch.setattr(experiment_module.Experiment, "run", fake_run)
    monkeypatch.setattr(zoo.data.splits, "check_source", lambda *a, **k: None)
    rows = run_experiment(config, log=lambda _: None)
    assert seen == list(FAKE_SPEAKERS)
    assert [r["fold"] for r in rows] == list(FAKE_SPEAKERS)
    table = summary_table(rows, T=15)
    assert "| m5 | 3.5 ± 1.9 |" in table and "6 leave-one-speaker-out folds" in table  # mean and spread of 1..6
    with pytest.raises(ValueError, match="leave test_speaker unset"):
        fold_configs(ExperimentConfig(dataset="fsdd", data_dir=str(fake_fsdd), cross_validation="speaker", test_speaker="ann"))


def test_the_loso_preset():
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import experiment as cli
    finally:
        sys.path.remove(str(ROOT / "tools"))
    config = cli.config_from(cli.parse_args(["--preset", "fsdd-loso", "--data-dir", "data"]))
    assert config.cross_validation == "speaker" and config.dataset == "fsdd" and config.test_speaker is None
    assert config.scratch_epochs is None  # from scratch on the CNN's budget
    assert cli.config_from(cli.parse_args(["--preset", "fsdd", "--cross-validation", "speaker"])).cross_validation == "speaker"
