"""The commands that take a model or export one: `export`, `finetune`, `translate`, `evaluate`.

A model folder knows what it is (export.json's `provenance`, see mosnas.pipeline.export.provenance), and these
commands default to it: the language pair, the corpus folder, the test split, the decoding and metric
settings, the run it came from. An option that contradicts the record (another language pair, another
family, a run of another pair) is refused with one line naming both values, unless --override-record; the
result file says which values were used and where each came from."""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

from mosnas.cli.args import setting
from mosnas.workspace.model_dir import ModelDir

OVERRIDE_HELP = "use options that contradict the model's record (its language pair, its run)"


def add_commands(sub: Any) -> None:
    """Add export, finetune, translate and evaluate to the CLI's subparsers."""
    e = sub.add_parser("export", help="collapse one arch of a trained run into a dense model folder")
    e.add_argument("run", help="run folder")
    e.add_argument("--arch", required=True, help="arch JSON file or string, or 'largest' / 'smallest'")
    e.add_argument("--out", help="output folder (default RUN/export/NAME)")
    e.add_argument("--quiet", action="store_true", help="accepted for symmetry: export shows no progress bar")
    e.set_defaults(handler=export_command)

    ft = sub.add_parser("finetune", help="fine-tune an exported subnet (or train its arch from scratch)")
    ft.add_argument("model", help="exported model folder (holds arch.json)")
    ft.add_argument("--run", help="the run folder it came from (data, vocabulary, recipe; default: the model's record)")
    # --steps is the max_steps of the fine-tuning run (finetune.steps=0 means "skip" in a config)
    setting(ft, "--steps", "train.max_steps", default=None, required=True)
    setting(ft, "--lr", "finetune.lr")
    ft.add_argument("--scratch", action="store_true", help="random initialization instead of inherited weights")
    setting(ft, "--valid-every", "finetune.valid_every")
    setting(ft, "--valid-bleu", "finetune.valid_bleu", help="validation sentences for BLEU (0: none)")
    ft.add_argument("--data", help="corpus folder (default: the run's data.dir)")
    ft.add_argument("--name", help="output name (default: <model>-ft or <model>-scratch)")
    ft.add_argument("--override-record", action="store_true", help=OVERRIDE_HELP)
    ft.add_argument("--quiet", action="store_true", help="no progress bars")
    ft.set_defaults(handler=finetune_command)

    def decoding(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("model", help="exported model folder")
        setting(sp, "--beam", "decode.beam", default=None, help="default: the model's record")
        setting(sp, "--lenpen", "decode.lenpen", default=None, help="default: the model's record")
        setting(sp, "--batch-size", "decode.batch_size", default=None, help="default: the model's record")
        sp.add_argument("--src-lang", help="source language (default: the model's record)")
        sp.add_argument("--tgt-lang", help="target language (default: the model's record)")
        sp.add_argument("--override-record", action="store_true", help=OVERRIDE_HELP)
        setting(sp, "--threads", "train.threads", default=0, help="CPU threads for decoding (0: torch's default)")
        sp.add_argument("--quiet", action="store_true", help="no progress bar")

    tr = sub.add_parser("translate", help="translate lines from a file or stdin")
    decoding(tr)
    tr.add_argument("--input", help="input file (default: stdin)")
    tr.set_defaults(handler=translate_command)

    ev = sub.add_parser("evaluate", help="BLEU and chrF (sacreBLEU, with signatures) of a model on a split")
    decoding(ev)
    ev.add_argument("--data", help="corpus folder (default: the model's record)")
    ev.add_argument("--split", help="split to score (default: the model's record, its data.test)")
    setting(ev, "--limit", "eval.limit", default=None, help="a seeded sample of N sentences (0: all)")
    setting(ev, "--tokenize", "eval.bleu_tokenize", default=None, help="sacreBLEU tokenizer (default: by language)")
    ev.set_defaults(handler=evaluate_command)


def export_command(args: argparse.Namespace) -> int:
    """`mosnas export RUN --arch ARCH`: the run's own config is the record (corpus, pair, tokenizer)."""
    from mosnas.engine.load import load_run
    from mosnas.errors import ConfigError
    from mosnas.pipeline.export import export_arch
    from mosnas.workspace.run_dir import RunDir

    run = load_run(args.run)
    arch = run.space.parse_arch(args.arch)
    inline = args.arch.lstrip().startswith("{")  # a JSON string: named by its content, so two never collide
    digest = hashlib.sha256(arch.to_json().encode()).hexdigest()[:8]
    name = f"arch-{digest}" if inline else args.arch if args.arch in ("largest", "smallest") else Path(args.arch).stem
    target = Path(args.out) if args.out else RunDir(Path(args.run)).export(name)
    held = ModelDir(target).read_arch()
    if held is not None and held != arch.to_dict():
        raise ConfigError(f"{target} holds another arch's export; give --out DIR, or remove it to replace it")
    out = export_arch(run, arch, target)
    info = ModelDir(out).info()
    pair = f", {info['provenance']['pair']}" if "pair" in info["provenance"] else ""
    print(f"exported {info['parameters']:,} parameters to {out} ({run.cfg.family}{pair}, step {run.step})")
    return 0


def _model_record(model: Path, family: str = "mt") -> dict[str, Any]:
    """The provenance of a model folder of `family` ({} when it has none: defaults then apply), refusing a
    folder that is no exported model or holds a model of another family."""
    from mosnas.errors import CheckpointError, ConfigError
    from mosnas.pipeline.export import read_provenance

    if not ModelDir(model).weights.is_file() and not ModelDir(model).record.is_file():
        raise CheckpointError(f"{model} is not an exported model folder (missing model.safetensors)")
    record = read_provenance(model) or {}
    if record.get("family", family) != family:
        raise ConfigError(f"{model} holds a {record['family']} model (its export.json), not a {family} model")
    return record


def _settings(args: argparse.Namespace, model: Path, record: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """Every setting the decoding commands use: (value, where it came from), the record's unless given."""
    from mosnas.config import setting_default
    from mosnas.pipeline.export import from_record

    data, metric = record.get("data", {}), record.get("metric", {})
    decode, ev = metric.get("decode", {}), metric.get("eval", {})
    out = {}
    for key, option in (("src_lang", "--src-lang"), ("tgt_lang", "--tgt-lang")):
        out[key] = from_record(option, getattr(args, key), data.get(key), model, args.override_record)
    for key in ("beam", "lenpen", "batch_size"):
        given = getattr(args, key)
        out[key] = (given, "option") if given is not None else (decode.get(key), "model record")
    if "split" in args:  # evaluate
        given_dir = str(Path(args.data).resolve()) if args.data else None
        out["dir"] = (given_dir, "option") if given_dir else (data.get("dir"), "model record")
        out["split"] = (args.split, "option") if args.split else (ev.get("split"), "model record")
        out["limit"] = (args.limit, "option") if args.limit is not None else (ev.get("limit"), "model record")
        tok = args.tokenize
        out["bleu_tokenize"] = (tok, "option") if tok is not None else (ev.get("bleu_tokenize"), "model record")
    defaults = {"dir": "data.dir", "split": "data.test", "limit": "eval.limit", "bleu_tokenize": "eval.bleu_tokenize"}
    for key, (value, _) in out.items():
        if value is None:  # no record (an old export whose run is gone): mosnas's defaults
            setting = defaults.get(key) or (f"data.{key}" if key.endswith("_lang") else f"decode.{key}")
            out[key] = (setting_default(setting), "default")
    if "dir" in out and out["dir"][1] == "default":
        from mosnas.workspace.paths import PROJECT, absolute

        out["dir"] = (absolute(out["dir"][0], PROJECT), "default")
    return out


def _set_threads(threads: int) -> None:
    """torch's intra-op threads for decoding (0: leave torch's default); ConfigError below 0."""
    from mosnas.errors import ConfigError

    if threads < 0:
        raise ConfigError(f"--threads must be >= 0, got {threads}")
    if threads:
        import torch

        torch.set_num_threads(threads)


def _decode(settings: dict[str, tuple[Any, str]]) -> Any:
    from mosnas.config import DecodeConfig

    return DecodeConfig(**{k: settings[k][0] for k in ("beam", "lenpen", "batch_size")})


def translate_command(args: argparse.Namespace) -> int:
    """`mosnas translate MODEL`: stdin (or --input) -> stdout, one line per line, in the record's pair."""
    from mosnas.mt.data import read_lines, stream_lines, write_lines
    from mosnas.mt.decode import translate
    from mosnas.mt.export import load_model

    model_dir = Path(args.model)
    settings = _settings(args, model_dir, _model_record(model_dir))
    _set_threads(args.threads)
    model, tok = load_model(model_dir)
    if not args.quiet:
        how = ", ".join(f"{k} {v} ({src})" for k, (v, src) in settings.items() if k.endswith("_lang"))
        print(f"mosnas: translating {settings['src_lang'][0]}->{settings['tgt_lang'][0]}: {how}", file=sys.stderr)
    d = _decode(settings)
    run = lambda lines, bar=False: translate(
        model, tok, lines, d.beam, d.lenpen, d.max_len_a, d.max_len_b, d.batch_size, bar
    )
    if args.input in (None, "-"):  # stdin streams: each line is written as soon as it is translated
        for line in stream_lines():
            write_lines("-", run([line]))
        return 0
    lines = read_lines(args.input)  # a file: batched by length, with a progress bar (stderr)
    write_lines("-", run(lines, not args.quiet))
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    """`mosnas evaluate MODEL`: BLEU and chrF on the record's corpus, pair and test split unless options say
    otherwise; eval.<split>.json says which values were used and where each came from."""
    from mosnas.config import DataConfig
    from mosnas.mt.evaluate import evaluate_model, model_about
    from mosnas.mt.export import load_model
    from mosnas.workspace.paths import require_dir

    model_dir = Path(args.model)
    s = _settings(args, model_dir, _model_record(model_dir))
    _set_threads(args.threads)
    where = {"option": "--data", "model record": "the model's record", "default": "the default, data.dir"}
    require_dir(s["dir"][0], "data directory", f"from {where[s['dir'][1]]}", "point mosnas at a corpus with --data DIR")
    data = DataConfig(dir=s["dir"][0], src_lang=s["src_lang"][0], tgt_lang=s["tgt_lang"][0])
    about = {**model_about(model_dir), "settings": {k: {"value": v, "from": src} for k, (v, src) in s.items()}}
    model, tok = load_model(model_dir)
    result = evaluate_model(
        model, tok, data, s["split"][0], _decode(s), s["limit"][0], model_dir, not args.quiet,
        tokenize=s["bleu_tokenize"][0], about={**about, "override_record": args.override_record},
    )  # fmt: skip
    print(
        f"BLEU {result['bleu']:.2f}  chrF {result['chrf']:.2f}  ({sentence_count(result)} sentences, "
        f"{result['split']}, {result['pair']}, references {result['references']})"
    )
    print(f"BLEU signature: {result['bleu_signature']}")
    print(f"chrF signature: {result['chrf_signature']}")
    return 0


def sentence_count(result: dict) -> str:
    """`1,000` for a whole split, `4 of 1,000` when --limit scored a subset (the count is the subset's)."""
    n, total = result["sentences"], result.get("sentences_available", result["sentences"])
    return f"{n:,}" if n == total else f"{n:,} of {total:,}"


def finetune_command(args: argparse.Namespace) -> int:
    """`mosnas finetune MODEL`: the run defaults to the model's record; a run of another family or language
    pair than the model's is refused unless --override-record."""
    from mosnas.engine.load import load_run, with_data
    from mosnas.errors import ConfigError
    from mosnas.pipeline.export import from_record
    from mosnas.pipeline.finetune import finetune
    from mosnas.workspace.lock import lock_run

    model = Path(args.model)
    record = _model_record(model, family=record_family(model))
    run_path = args.run or record.get("run")
    if run_path is None:
        raise ConfigError(f"{model} has no provenance record naming its run: give --run RUN")
    run = with_data(load_run(run_path), args.data)
    lock_run(run.run_dir)  # it writes into the run (a no-op when the CLI took the lock for --run)
    from_record("the run's family", run.cfg.family, record.get("family"), model, args.override_record)
    from mosnas.family import family_of

    family_of(run.cfg.family).load_model(model)  # a whole folder: weights, config and its own tokenizer
    if run.cfg.family == "mt":
        pair = f"{run.cfg.data.src_lang}-{run.cfg.data.tgt_lang}"
        from_record(f"the run's language pair ({run_path})", pair, record.get("pair"), model, args.override_record)
    tokenizer = (record.get("tokenizer") or {}).get("file")
    if tokenizer and (run.run_dir / tokenizer).is_file():  # e.g. the run's own subword model (mt)
        from mosnas.workspace.paths import file_sha256

        theirs = (record.get("tokenizer") or {}).get("sha256")
        ours = file_sha256(run.run_dir / tokenizer)
        from_record(
            f"the run's {tokenizer} (sha256)",
            ours[:12],
            theirs and theirs[:12],
            model,
            args.override_record,
        )
    name = args.name or f"{model.name}-{'scratch' if args.scratch else 'ft'}"
    ft = (args.steps, args.lr)
    export, curve = finetune(
        run.cfg, model, run.dir.finetune, name, *ft, valid_every=args.valid_every, valid_bleu=args.valid_bleu,
        scratch=args.scratch, progress=not args.quiet,
    )  # fmt: skip
    for r in curve:
        bleu = f"  BLEU {r['valid_bleu']:.2f}" if "valid_bleu" in r else ""
        print(f"step {r['step']:6d}  valid NLL {r['valid_nll_fixed']:.4f}{bleu}")
    print(f"exported to {export} (run {run.run_dir})")
    return 0


def record_family(model: Path) -> str:
    """The family an export.json names (mt when it names none: exports before families were recorded)."""

    info = ModelDir(model).info()
    return (info.get("provenance") or {}).get("family", "mt")
