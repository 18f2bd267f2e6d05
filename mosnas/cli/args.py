"""The command line's building blocks: one-line option errors, options that stand for config settings,
the run-folder lock of commands that write into a run, and quiet exits on Ctrl-C and closed pipes."""

from __future__ import annotations

import argparse
import os
import re
import sys
import typing
from pathlib import Path

WRITES_RUN = ("latency", "search", "export", "finetune")  # commands whose `run` argument they write into


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one `mosnas: error:` line (a ConfigError), not a usage block."""

    def error(self, message: str) -> typing.NoReturn:
        from mosnas.config.settings import did_you_mean
        from mosnas.errors import ConfigError

        hint = ""
        if message.startswith("the following arguments are required:"):  # name only what is required:
            optional = {a.metavar or a.dest for a in self._actions if a.nargs in ("*", "?")}  # argparse lists these
            names = [n.strip() for n in message.split(":", 1)[1].split(",")]
            message = "the following arguments are required: " + ", ".join(n for n in names if n not in optional)
        bad = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if bad:  # a mistyped command
            hint = did_you_mean(bad.group(1), re.findall(r"[\w-]+", bad.group(2)))
        elif message.startswith("unrecognized arguments:"):  # a mistyped option of this command (self)
            word = message.split(":", 1)[1].split()[0].split("=")[0]
            hint = did_you_mean(word, [o for a in self._actions for o in a.option_strings])
            hint = hint or _as_setting(word)
        raise ConfigError(f"{message}{hint} (see `{self.prog} --help`)")


class _Setting:
    """The argparse type of an option that stands for a config setting: converted and checked as that
    setting is declared (type, range, choices), so the option has the same valid values as the config."""

    def __init__(self, key: str, option: str):
        self.key, self.option = key, option

    def __call__(self, text: str) -> typing.Any:
        from mosnas.config import parse_setting

        return parse_setting(self.key, text, self.option)  # a ConfigError: one line, before any work

    def __repr__(self) -> str:
        return f"setting {self.key}"


def setting(sp: argparse.ArgumentParser, option: str, key: str, **kw: typing.Any) -> None:
    """Add `option` for the config setting `key`: its type and valid values, and its default unless given."""
    from mosnas.config import setting_default
    from mosnas.config.reference import meaning

    kw.setdefault("default", setting_default(key))
    text = kw.pop("help", None) or meaning(key)
    default = kw["default"]
    if "default" not in text and default not in (None, "", ()):  # what the option is when not given
        text += f" (default: {default})"
    kw["help"] = f"{text} [config: {key}]"  # the same setting in a config file or an override
    sp.add_argument(option, type=_Setting(key, option), **kw)


def _as_setting(option: str) -> str:
    """'; as a config setting: train.max_steps=VALUE' for an option that names a config key (--max-steps)."""
    from mosnas.config.reference import rows

    leaf = option.lstrip("-").replace("-", "_")
    keys = [r["key"] for r in rows() if r["key"].rsplit(".", 1)[-1] == leaf]
    return f"; as a config setting: {keys[0]}=VALUE" if keys else ""


def lock_written_run(args: argparse.Namespace) -> None:
    """Take the lock of the run folder a command writes into (train/run lock theirs when they open it)."""
    run = getattr(args, "run", None)
    if args.command in WRITES_RUN and run and Path(run).is_dir():
        from mosnas.workspace.lock import lock_run

        lock_run(run)


def quiet_exit(e: BaseException) -> int:
    """Exit code and last words on Ctrl-C (130, with how to continue) or on a closed pipe (`| head`: quiet)."""
    if isinstance(e, BrokenPipeError):
        try:  # the reader is gone: drop what is buffered, so exiting does not raise again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by a closed pipe
    print("mosnas: interrupted; running the same command again continues where it stopped", file=sys.stderr)
    return 130


def closing_lines(cfg: typing.Any, results: dict[str, typing.Any]) -> str:
    """What `mosnas run` prints last: how long it took, where its files are and what to run next."""
    root = Path(cfg.run_dir)
    seconds = results.get("wall_s_this_call", 0.0)
    rows = results["results"]
    model = next((r for r in rows if r["kind"] == "search"), rows[0] if rows else None)
    folder = root / "export" / model["name"] if model else root / "export"
    if cfg.family == "nasbert":  # no predictor, plots or stage commands of its own yet
        load = f"from mosnas.bert.nasbert.model import load_model; load_model('{folder}')"
        return "\n".join(
            [
                f"done in {seconds / 60:.1f} min: {len(rows)} picks exported; files in {root}/",
                f"  summary.md, results.json, search/nasbert_table.json; models in {root / 'export'}/<budget>/",
                f'next: python -c "{load}" (or onnxruntime on {folder}/model.onnx)',
            ]
        )
    use = (
        f"mosnas translate {folder} --input FILE > OUT"
        if cfg.family == "mt"
        else f"python -c \"from transformers import AutoModel; AutoModel.from_pretrained('{folder}')\""
    )
    has_predictor = (root / "latency" / "predictor.json").is_file()
    budget = "--latency-fraction F (0..1 of the predicted span)" if has_predictor else "--max-params 10M"
    return "\n".join(
        [
            f"done in {seconds / 60:.1f} min: {len(rows)} subnets scored; files in {root}/",
            f"  summary.md, results.json, pareto.png, train_curve.png; models in {root / 'export'}/<subnet>/",
            f"next: {use}   |   mosnas search {root} {budget}   |   mosnas report {root}",
        ]
    )
