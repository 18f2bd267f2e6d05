"""Every option of every command is checked like the config setting it stands for, before any work is done.

The options are found by introspecting the real parser, so an option added later without a check fails here."""

import argparse
import typing

import pytest

from mosnas.cli.main import _parser, main
from tests.conftest import ROOT
from tests.test_config import _bad_values, _fields

SETTINGS = {key: (f, typ) for key, f, typ in _fields()}


def _commands() -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _takes_a_value(a: argparse.Action) -> bool:
    numeric_default = isinstance(a.default, (int, float)) and not isinstance(a.default, bool)
    return bool(a.option_strings) and a.nargs != 0 and (a.type is not None or numeric_default)


OPTIONS = [(cmd, a) for cmd, sp in _commands().items() for a in sp._actions if _takes_a_value(a)]


def _setting(a: argparse.Action):
    """The config setting an option stands for: (key, field, type of one value)."""
    key = getattr(a.type, "key", None)
    assert key in SETTINGS, f"option {a.option_strings[0]} is not checked like a config setting (type={a.type!r})"
    f, typ = SETTINGS[key]
    return key, f, typing.get_args(typ)[0] if typing.get_origin(typ) is tuple else typ


def _bad(a: argparse.Action) -> list[str]:
    _, f, typ = _setting(a)
    if "bounds" in f.metadata:
        return _bad_values(f, typ)
    return [v for v in ("no-such-value", "") if v not in f.metadata.get("choices", ())]  # choices or a pattern


def _argv(cmd: str, sp: argparse.ArgumentParser, tmp_path, option: str, value: str) -> list[str]:
    """A command line for `cmd` whose only problem is `option=value`: folders it names do not exist (so a
    missing check shows as a different error), train/run get the tiny config writing into tmp_path."""
    argv = [cmd]
    for a in sp._actions:
        if not a.option_strings and a.nargs == "*":
            argv.append(f"out_dir={tmp_path}")
        elif not a.option_strings:
            argv.append(str(ROOT / "configs" / "tiny.yaml") if a.dest == "config" else str(tmp_path / a.dest))
        elif a.required and a.option_strings[0] != option:
            good = str(SETTINGS[a.type.key][0].default) if hasattr(a.type, "key") else str(tmp_path / a.dest)
            argv += [a.option_strings[0], good]
    return argv + [f"{option}={value}", "--quiet"]


def test_every_command_has_options_found():
    names = {(cmd, a.option_strings[0]) for cmd, a in OPTIONS}
    assert {("translate", "--beam"), ("evaluate", "--limit"), ("search", "--latency-ms")} <= names
    assert {("finetune", "--steps"), ("latency", "--samples"), ("evaluate", "--batch-size")} <= names


@pytest.mark.parametrize("cmd, action", OPTIONS, ids=[f"{c}{a.option_strings[0]}" for c, a in OPTIONS])
def test_bad_option_values_are_one_line_errors_before_any_work(capsys, tmp_path, cmd, action):
    option = action.option_strings[0]
    sp = _commands()[cmd]
    for value in _bad(action):
        try:
            code = main(_argv(cmd, sp, tmp_path, option, value))
        except SystemExit as e:
            code = e.code
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2, (cmd, option, value, err)
        assert len(lines) == 1 and lines[0].startswith("mosnas: error:"), (cmd, option, value, err)
        assert option in lines[0] and "Traceback" not in err, (cmd, option, value, lines[0])
        assert not list(tmp_path.iterdir()), f"{cmd} {option}={value} wrote {list(tmp_path.iterdir())}"


@pytest.mark.parametrize("cmd, action", OPTIONS, ids=[f"{c}{a.option_strings[0]}" for c, a in OPTIONS])
def test_good_option_values_are_accepted(tmp_path, cmd, action):
    key, f, typ = _setting(action)
    good = f.default if not isinstance(f.default, tuple) else f.metadata.get("choices", (1,))[0]  # a list: one entry
    args = _parser().parse_args(_argv(cmd, _commands()[cmd], tmp_path, action.option_strings[0], str(good)))
    expected = [typ(good)] if action.nargs in ("+", "*") else typ(good)  # a list option: a list of one
    assert getattr(args, action.dest) == expected


@pytest.mark.parametrize(
    "argv, fragment",
    [
        ([], "the following arguments are required: command"),
        (["translate"], "the following arguments are required: model"),
        (["export", "RUN"], "the following arguments are required: --arch"),
        (["translate", "MODEL", "--bogus"], "unrecognized arguments: --bogus"),
        (["evaluate", "MODEL", "--beam"], "argument --beam: expected one argument"),
        (["fly"], "invalid choice: 'fly'"),
    ],
)
def test_bad_command_lines_are_one_line_errors(capsys, argv, fragment):
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("mosnas: error:") and fragment in lines[0], lines[0]
