"""Help texts: every flag of ``tools/train.py`` and ``ann2snn convert`` has help, and every
flag with a value default says what it is."""

import argparse

import pytest

from ann2snn.cli import build_parser


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _check(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = action.option_strings[-1] if action.option_strings else action.dest
        assert action.help, f"{name} has no help"
        takes_value = action.nargs != 0 and not isinstance(action, argparse.BooleanOptionalAction)
        if action.option_strings and takes_value and action.default not in (None, False):
            assert "default" in action.help, f"{name}: its help does not say its default"


def test_train_help_describes_every_flag_and_its_default(capsys):
    pytest.importorskip("torchaudio")
    from ann2snn_zoo.harness import train_cli

    with pytest.raises(SystemExit):
        train_cli.parse_args(["--help"])
    out = capsys.readouterr().out
    assert "Train one model of the audio zoo" in out and "examples:" in out and "download_fsdd" in out
    assert "(default: 20)" in out and "(default: synthetic)" in out

    _check(train_cli.build_parser())


def test_convert_help_describes_every_flag():
    _check(_subparser(build_parser(), "convert"))
