"""Command line: mosnas run|train|latency|search|export|finetune|translate|evaluate (the Python API's functions)."""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from importlib.metadata import version

from mosnas import tune_malloc
from mosnas.cli.args import Parser, closing_lines, lock_written_run, quiet_exit

COMMAND_MODULES: tuple[str, ...] = (
    "mosnas.cli.latency",  # latency (measure, fit, --fit a dataset) and search (budgets re-measured)
    "mosnas.cli.model",  # export, finetune, translate, evaluate: default to the model's record
    "mosnas.cli.config",  # config: every config key
    "mosnas.cli.report",  # report: rebuild a run's summary, results and plots
    "mosnas.cli.glue",  # glue: fine-tune a Hugging Face BERT folder on GLUE tasks
    "mosnas.cli.autodistil",  # autodistil: AutoDistil's sub-space supernets and their budgets
    "mosnas.cli.study",  # study: supernet fidelity, retraining cost and Pareto fronts per generator
)  # modules of this folder whose add_commands(sub) adds more subcommands


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="mosnas", description=__doc__)
    p.add_argument("--version", action="version", version=f"mosnas {version('mosnas')}")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("config", help="run config (YAML)")
        sp.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=5e-4")
        sp.add_argument("--data", help="corpus folder (same as data.dir=...)")
        sp.add_argument("--force", action="store_true", help="overwrite a different run in the same folder")
        sp.add_argument("--quiet", action="store_true", help="no progress bars")

    t = sub.add_parser("train", help="train a supernet")
    with_config(t)
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    r = sub.add_parser("run", help="train, export, evaluate and report (continues a stopped run)")
    with_config(r)

    for name in COMMAND_MODULES:  # each adds its subcommands, with set_defaults(handler=fn(args) -> exit code)
        importlib.import_module(name).add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    tune_malloc()  # before torch is imported
    from mosnas.errors import Interrupted, MosnasError

    try:
        args = _parse(argv)  # every option is checked while parsing: before any work
        lock_written_run(args)  # one writer per run folder
        return _dispatch(args)
    except Interrupted as e:  # stopped by a signal after saving its work: not an error of the input
        print(f"mosnas: {e}", file=sys.stderr)
        return e.exit_code
    except MosnasError as e:
        print(f"mosnas: error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, BrokenPipeError) as e:
        return quiet_exit(e)
    except OSError as e:  # disk full, permissions: name the file, never a traceback
        where = f" ({e.filename})" if e.filename else ""
        print(f"mosnas: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # `key=value` overrides may come after options (e.g. `--data DIR train.lr=1e-3`).
    if extra and (args.command not in ("train", "run") or any(x.startswith("-") for x in extra)):
        (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")  # suggests its own options
    if extra:
        args.overrides = list(args.overrides) + extra
    return args


def _dispatch(args: argparse.Namespace) -> int:
    if getattr(args, "handler", None) is not None:
        return args.handler(args)
    from mosnas.config import load_config

    if args.command in ("train", "run"):
        overrides = list(args.overrides) + ([f"data.dir={args.data}"] if args.data else [])
        cfg = load_config(args.config, overrides)
        if args.command == "train":
            from mosnas.engine.train import train

            run_dir = train(cfg, resume=args.resume, force=args.force, show_progress=not args.quiet)
            again = shlex.join(
                ["mosnas", "run", args.config, *args.overrides] + (["--data", args.data] if args.data else [])
            )
            print(f"trained supernet saved in {run_dir}; next: {again} (search, export, score)")
        else:
            from mosnas.pipeline.run import run
            from mosnas.workspace.run_dir import RunDir

            results = run(cfg, force=args.force, progress=not args.quiet)
            print(RunDir(cfg.run_dir).summary.read_text(encoding="utf-8"))
            print(closing_lines(cfg, results))
        return 0
    raise AssertionError(f"no handler for {args.command}")
