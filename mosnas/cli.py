"""Command line: mosnas run|train|latency|search|export|finetune|translate|evaluate (the Python API's functions)."""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import version

from mosnas import tune_malloc
from mosnas.cli_args import _Parser, _setting, lock_written_run, quiet_exit

COMMAND_MODULES: tuple[str, ...] = (
    "mosnas.reference",
    "mosnas.rebuild",
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

    e = sub.add_parser("export", help="collapse one arch of a trained run into a dense model folder")
    e.add_argument("run", help="run folder")
    e.add_argument("--arch", required=True, help="arch JSON file or string, or 'largest' / 'smallest'")
    e.add_argument("--out", help="output folder (default RUN/export/NAME)")
    e.add_argument("--quiet", action="store_true", help="accepted for symmetry: export shows no progress bar")

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

    ft = sub.add_parser("finetune", help="fine-tune an exported subnet (or train its arch from scratch)")
    ft.add_argument("model", help="exported model folder (holds arch.json)")
    ft.add_argument("--run", required=True, help="the run folder it came from (data, vocabulary, recipe)")
    # --steps is the max_steps of the fine-tuning run (finetune.steps=0 means "skip" in a config)
    _setting(ft, "--steps", "train.max_steps", default=None, required=True)
    _setting(ft, "--lr", "finetune.lr")
    ft.add_argument("--scratch", action="store_true", help="random initialization instead of inherited weights")
    _setting(ft, "--valid-every", "finetune.valid_every")
    _setting(ft, "--valid-bleu", "finetune.valid_bleu", help="validation sentences for BLEU (0: none)")
    ft.add_argument("--name", help="output name (default: <model>-ft or <model>-scratch)")
    ft.add_argument("--quiet", action="store_true")

    def decoding(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("model", help="exported model folder")
        _setting(sp, "--beam", "decode.beam")
        _setting(sp, "--lenpen", "decode.lenpen")
        _setting(sp, "--batch-size", "decode.batch_size")
        sp.add_argument("--quiet", action="store_true", help="no progress bar")

    tr = sub.add_parser("translate", help="translate lines from a file or stdin")
    decoding(tr)
    tr.add_argument("--input", help="input file (default: stdin)")

    ev = sub.add_parser("evaluate", help="BLEU and chrF (sacreBLEU, with signatures) of a model on a split")
    decoding(ev)
    from mosnas.config import setting_default

    ev.add_argument("--data", default=setting_default("data.dir"), help="corpus folder")
    ev.add_argument("--split", default=setting_default("data.test"))
    ev.add_argument("--src-lang", default=setting_default("data.src_lang"))
    ev.add_argument("--tgt-lang", default=setting_default("data.tgt_lang"))
    _setting(ev, "--limit", "eval.limit", help="only the first N sentences")
    _setting(ev, "--tokenize", "eval.bleu_tokenize", help="sacreBLEU tokenizer (default: by --tgt-lang)")
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
    import json
    from pathlib import Path

    from mosnas.config import DataConfig, DecodeConfig, load_config

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
    if args.command == "export":
        from mosnas.export import export_arch
        from mosnas.run import RunDir, load_run

        run = load_run(args.run)
        arch = run.space.parse_arch(args.arch)
        literal = args.arch in ("largest", "smallest") or args.arch.lstrip().startswith("{")
        name = ("arch" if args.arch.lstrip().startswith("{") else args.arch) if literal else Path(args.arch).stem
        out = export_arch(run, arch, args.out or RunDir(Path(args.run)).export(name))
        print(f"exported {json.loads((out / 'export.json').read_text())['parameters']:,} parameters to {out}")
        return 0

    if args.command == "latency":
        return _latency(args)
    if args.command == "search":
        return _search(args)
    if args.command == "finetune":
        return _finetune(args)

    from mosnas.mt.export import load_model

    model, tok = load_model(args.model)
    decode = DecodeConfig(beam=args.beam, lenpen=args.lenpen, batch_size=args.batch_size)
    if args.command == "translate":
        from mosnas.mt.data import read_lines, write_lines
        from mosnas.mt.decode import translate

        lines = read_lines(args.input or "-")  # "\n"-terminated lines, from a file or stdin alike
        hyps = translate(
            model, tok, lines, decode.beam, decode.lenpen, decode.max_len_a, decode.max_len_b, decode.batch_size
        )
        write_lines("-", hyps)  # one line per input line, UTF-8, whatever the locale
        return 0
    from mosnas.mt.evaluate import evaluate_model

    data = DataConfig(dir=args.data, src_lang=args.src_lang, tgt_lang=args.tgt_lang)
    result = evaluate_model(
        model, tok, data, args.split, decode, args.limit, args.model, not args.quiet, tokenize=args.tokenize
    )
    print(f"BLEU {result['bleu']:.2f}  chrF {result['chrf']:.2f}  ({result['sentences']} sentences, {args.split})")
    print(f"BLEU signature: {result['bleu_signature']}")
    print(f"chrF signature: {result['chrf_signature']}")
    return 0


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


def _finetune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mosnas.finetune import finetune
    from mosnas.run import load_run

    run = load_run(args.run)
    model = Path(args.model)
    name = args.name or f"{model.name}-{'scratch' if args.scratch else 'ft'}"
    export, curve = finetune(
        run.cfg,
        model,
        run.dir.finetune,
        name,
        args.steps,
        args.lr,
        valid_every=args.valid_every,
        valid_bleu=args.valid_bleu,
        scratch=args.scratch,
        progress=not args.quiet,
    )
    for r in curve:
        bleu = f"  BLEU {r['valid_bleu']:.2f}" if "valid_bleu" in r else ""
        print(f"step {r['step']:6d}  valid NLL {r['valid_nll_fixed']:.4f}{bleu}")
    print(f"exported to {export}")
    return 0
