"""Command line: mosnas run|train|latency|search|export|finetune|translate|evaluate (the Python API's functions)."""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import version

from mosnas import tune_malloc
from mosnas.cli_args import _Parser, _setting, lock_written_run, quiet_exit

COMMAND_MODULES: tuple[str, ...] = (
    "mosnas.commands",  # export, finetune, translate, evaluate: default to the model's record
    "mosnas.reference",
    "mosnas.rebuild",
    "mosnas.glue",  # glue: fine-tune a Hugging Face BERT folder on GLUE tasks
)  # modules whose add_commands(sub) adds more subcommands


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mosnas", description=__doc__)
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

    la = sub.add_parser("latency", help="measure archs, fit the latency predictor, report its held-out accuracy")
    la.add_argument("run", help="run folder")
    _setting(la, "--samples", "latency.num_samples", default=None, help="archs to measure (default: the run's)")
    la.add_argument("--quiet", action="store_true")

    se = sub.add_parser("search", help="evolutionary search under a budget, then export and evaluate the winner")
    se.add_argument("run", help="run folder")
    _setting(se, "--latency-ms", "search.latency_ms", default=None, help="latency budget (needs `mosnas latency RUN`)")
    _setting(se, "--max-params", "search.max_params", help="parameter limit (0: none)")
    _setting(se, "--max-flops", "search.max_flops", help="FLOPs limit (0: none)")
    se.add_argument("--quiet", action="store_true")

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
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
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
            from mosnas.train import train

            run_dir = train(cfg, resume=args.resume, force=args.force, show_progress=not args.quiet)
            print(f"trained supernet saved in {run_dir}")
        else:
            from mosnas.pipeline import run
            from mosnas.run import RunDir

            results = run(cfg, force=args.force, progress=not args.quiet)
            print(RunDir(cfg.run_dir).summary.read_text(encoding="utf-8"))
            print(f"results: {RunDir(cfg.run_dir).results} ({len(results['results'])} archs)")
        return 0
    if args.command == "latency":
        return _latency(args)
    if args.command == "search":
        return _search(args)
    raise AssertionError(f"no handler for {args.command}")


def _latency(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from mosnas.pipeline import latency_stage
    from mosnas.run import load_run

    run = load_run(args.run)
    lc = replace(run.cfg.latency, num_samples=args.samples) if args.samples else run.cfg.latency
    replace(run.cfg, latency=lc).validate()  # --samples against the run's latency.holdout
    report = latency_stage(run, lc, progress=not args.quiet)
    for name in ("mlp", "linear"):
        m = report[name]
        print(
            f"{name:6s} held-out ({report['heldout_samples']} archs, trained on {report['train_samples']}): "
            f"RMSE {m['rmse_ms']:.3f} ms  MAPE {m['mape_pct']:.2f}%  Kendall tau {m['kendall_tau']:.3f}"
        )
    print(f"scatter plot: {run.dir.latency / 'scatter.png'}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from mosnas.errors import ConfigError
    from mosnas.pipeline import export_and_score, search_stage
    from mosnas.run import load_run

    run = load_run(args.run)
    if args.latency_ms is None and not (args.max_params or args.max_flops):
        raise ConfigError("give a budget: --latency-ms, --max-params and/or --max-flops")
    if args.latency_ms is not None and not (run.dir.latency / "predictor.json").is_file():
        raise ConfigError(f"a latency budget needs the predictor: run `mosnas latency {args.run}` first")
    parts = (
        ([f"latency-{args.latency_ms:g}ms"] if args.latency_ms is not None else [])
        + ([f"params-{args.max_params}"] if args.max_params else [])
        + ([f"flops-{args.max_flops}"] if args.max_flops else [])
    )
    name = "_".join(parts)
    sc = replace(run.cfg.search, max_params=args.max_params, max_flops=args.max_flops)
    found = search_stage(run, sc, name, args.latency_ms, run.cfg.latency, progress=not args.quiet)
    arch = run.space.arch_from_dict(found["evolution"]["arch"])
    row = export_and_score(run, arch, run.dir.export(name), run.cfg.latency, progress=not args.quiet)
    print(f"best arch ({found['evolution']['num_evaluations']} evaluations): {arch.to_json()}")
    print(
        f"validation NLL {found['evolution']['fitness']:.4f}"
        + (f" (random search, same evaluations: {found['random']['fitness']:.4f})" if "random" in found else "")
    )
    print(
        f"parameters {row['parameters']:,}  FLOPs {row['flops']:,}  latency predicted "
        f"{found['predicted_latency_ms']} ms, measured {row['measured_latency_ms']:.2f} ms"
    )
    print(f"BLEU {row['bleu']:.2f}  chrF {row['chrf']:.2f}  ({row['split']})  {row['bleu_signature']}")
    print(f"exported to {run.dir.export(name)}")
    return 0
