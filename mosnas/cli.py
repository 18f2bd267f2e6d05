"""Command line: mosnas train|export|translate|evaluate|run (the same functions as the Python API)."""

from __future__ import annotations

import argparse
import ctypes
import sys


def _tune_malloc() -> None:
    # Variable batch shapes make glibc return and re-fetch memory at every step (~40% of a CPU
    # step measured here); keep freed memory instead. Must run before torch allocates anything.
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 36)  # M_TRIM_THRESHOLD: never trim the heap
        libc.mallopt(-3, 1 << 25)  # M_MMAP_THRESHOLD: its maximum (32 MiB); larger blocks are rare
    except (OSError, AttributeError):
        pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mosnas", description=__doc__)
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

    def decoding(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("model", help="exported model folder")
        sp.add_argument("--beam", type=int, default=5)
        sp.add_argument("--lenpen", type=float, default=1.0)
        sp.add_argument("--batch-size", type=int, default=64)
        sp.add_argument("--quiet", action="store_true", help="no progress bar")

    tr = sub.add_parser("translate", help="translate lines from a file or stdin")
    decoding(tr)
    tr.add_argument("--input", help="input file (default: stdin)")

    ev = sub.add_parser("evaluate", help="BLEU and chrF (sacreBLEU, with signatures) of a model on a split")
    decoding(ev)
    ev.add_argument("--data", default="../shared/data/multi30k", help="corpus folder")
    ev.add_argument("--split", default="test_2016_flickr")
    ev.add_argument("--src-lang", default="en")
    ev.add_argument("--tgt-lang", default="de")
    ev.add_argument("--limit", type=int, default=0, help="only the first N sentences")
    return p


def main(argv: list[str] | None = None) -> int:
    _tune_malloc()
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # `key=value` overrides may come after options (e.g. `--data DIR train.lr=1e-3`).
    if extra and (args.command not in ("train", "run") or any(x.startswith("-") for x in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    from mosnas.errors import MosnasError

    try:
        return _dispatch(args)
    except MosnasError as e:
        print(f"mosnas: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mosnas: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # disk full, permissions: name the file, never a traceback
        where = f" ({e.filename})" if e.filename else ""
        print(f"mosnas: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
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

            results = run(cfg, force=args.force, progress=not args.quiet)
            print((cfg.run_dir / "summary.md").read_text(encoding="utf-8"))
            print(f"results: {cfg.run_dir / 'results.json'} ({len(results['results'])} archs)")
        return 0
    if args.command == "export":
        from mosnas.export import export_arch
        from mosnas.train import load_run

        run = load_run(args.run)
        arch = run.space.parse_arch(args.arch)
        name = (
            args.arch
            if args.arch in ("largest", "smallest")
            else Path(args.arch).stem
            if not args.arch.lstrip().startswith("{")
            else "arch"
        )
        out = export_arch(run, arch, args.out or Path(args.run) / "export" / name)
        print(f"exported {json.loads((out / 'export.json').read_text())['parameters']:,} parameters to {out}")
        return 0

    from mosnas.export import load_model

    model, tok = load_model(args.model)
    decode = DecodeConfig(beam=args.beam, lenpen=args.lenpen, batch_size=args.batch_size)
    if args.command == "translate":
        from mosnas.data import read_lines
        from mosnas.decode import translate

        lines = read_lines(args.input) if args.input else sys.stdin.read().splitlines()
        for line in translate(
            model, tok, lines, decode.beam, decode.lenpen, decode.max_len_a, decode.max_len_b, decode.batch_size
        ):
            print(line)
        return 0
    from mosnas.evaluate import evaluate_model

    data = DataConfig(dir=args.data, src_lang=args.src_lang, tgt_lang=args.tgt_lang)
    result = evaluate_model(model, tok, data, args.split, decode, args.limit, args.model, not args.quiet)
    print(f"BLEU {result['bleu']:.2f}  chrF {result['chrf']:.2f}  ({result['sentences']} sentences, {args.split})")
    print(f"BLEU signature: {result['bleu_signature']}")
    print(f"chrF signature: {result['chrf_signature']}")
    return 0
