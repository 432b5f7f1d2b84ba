"""Help texts of tools/experiment.py and tools/bench.py: every flag has help, every flag that
takes a value says its default, and what they say about the presets holds."""

import argparse
import importlib.util
from pathlib import Path

import pytest

from ann2snn_zoo.harness import experiment_cli, train_cli
from ann2snn_zoo.harness.presets import PRESETS

ROOT = Path(__file__).resolve().parents[2]


def _undescribed(parser: argparse.ArgumentParser, modes: tuple[str, ...] = ()) -> list[str]:
    """Flags without help, and value flags (but ``modes``) whose help names no default."""
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = action.option_strings[-1]
        if not action.help:
            missing.append(f"{name}: no help")
        elif action.nargs != 0 and name not in modes and "default" not in action.help:
            missing.append(f"{name}: no default")
    return missing


def _bench_parser() -> argparse.ArgumentParser:
    spec = importlib.util.spec_from_file_location("bench_help_under_test", ROOT / "tools" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


def test_experiment_help_describes_every_flag_and_its_default():
    assert _undescribed(experiment_cli.build_parser(), modes=("--merge",)) == []


def test_bench_help_describes_every_flag_and_its_default():
    assert _undescribed(_bench_parser()) == []


@pytest.mark.parametrize("parser", [experiment_cli.build_parser, _bench_parser])
def test_list_flags_show_the_comma_form(parser):
    helps = {a.option_strings[-1]: a.help for a in parser()._actions if isinstance(a, train_cli.FlatList)}
    assert "--T" in helps and all(train_cli.LIST_FORM in text for text in helps.values()), helps


def test_the_out_default_the_help_states_is_every_presets():
    help_text = next(a.help for a in experiment_cli.build_parser()._actions if "--out" in a.option_strings)
    assert "runs/PRESET" in help_text
    assert {name: preset["out_dir"] for name, preset in PRESETS.items()} == {name: f"runs/{name}" for name in PRESETS}


def test_train_help_says_a_missing_output_folder_is_created(capsys):
    with pytest.raises(SystemExit):
        train_cli.parse_args(["--help"])
    assert "missing folder is created" in " ".join(capsys.readouterr().out.split())
