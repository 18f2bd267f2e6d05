"""Evaluation the way the field reports it: detokenized sacreBLEU and chrF with signatures."""

from __future__ import annotations

import json
import os
import re
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path
from typing import Any

from sacrebleu.metrics import BLEU, CHRF

from mosnas.config import DataConfig, DecodeConfig
from mosnas.errors import ConfigError, DataError
from mosnas.mt.data import find_split, read_parallel, write_lines
from mosnas.mt.decode import translate
from mosnas.workspace.model_dir import ModelDir


def bleu_metric(tgt_lang: str = "", tokenize: str | None = None) -> BLEU:
    """sacreBLEU's BLEU for text in language `tgt_lang` (a code such as "de" or "zh").

    With `tokenize` None or "", sacreBLEU picks the tokenizer from `tgt_lang` exactly as its command line
    does for `-l xx-{tgt_lang}` (today: zh -> zh, ja -> ja-mecab, ko -> ko-mecab, anything else 13a);
    otherwise `tokenize` is used (one of BLEU.TOKENIZERS). The choice shows in the signature's `tok:`.
    Raises ConfigError for an unknown tokenizer name, for a tokenizer whose optional packages are not
    installed (naming them), and for a sentencepiece tokenizer whose model sacreBLEU would download."""
    tokenize = tokenize or None
    if tokenize is not None and tokenize not in BLEU.TOKENIZERS:
        raise ConfigError(f"unknown BLEU tokenizer '{tokenize}' (expected one of: {', '.join(BLEU.TOKENIZERS)})")
    what = f"BLEU tokenizer '{tokenize}'" if tokenize else f"BLEU for target language '{tgt_lang}'"
    _refuse_download(tokenize)
    try:
        return BLEU(tokenize=tokenize, trg_lang=tgt_lang)
    except (ImportError, RuntimeError, AssertionError) as e:  # what sacreBLEU raises for missing extras
        message = " ".join(str(e).split())
        extra = re.search(r"sacrebleu\[(\w+)\]", message)
        if extra is None:
            raise ConfigError(f"{what}: {message}") from None
        raise ConfigError(
            f"{what} needs the optional package(s) {', '.join(_extra_packages(extra[1]))}: "
            f"pip install 'sacrebleu[{extra[1]}]'"
        ) from None


def _extra_packages(extra: str) -> list[str]:
    """Names of the packages of sacrebleu's optional `extra`, from its own metadata."""
    try:
        reqs = requires("sacrebleu") or []
    except PackageNotFoundError:
        reqs = []
    names = [re.match(r"[\w.-]+", r)[0] for r in reqs if re.search(rf"extra\s*==\s*['\"]{extra}['\"]", r)]
    return names or [f"sacrebleu[{extra}]"]


def _refuse_download(tokenize: str | None) -> None:
    # sacreBLEU's sentencepiece tokenizers download their model on first use; mosnas downloads nothing.
    from sacrebleu.tokenizers import tokenizer_spm

    if tokenize in tokenizer_spm.SPM_MODELS:
        url = tokenizer_spm.SPM_MODELS[tokenize]["url"]
        path = Path(tokenizer_spm.SACREBLEU_DIR) / "models" / os.path.basename(url)
        if not path.is_file():
            raise ConfigError(f"BLEU tokenizer '{tokenize}' needs {path} (mosnas downloads nothing: fetch {url})")


def score(
    hypotheses: list[str], references: list[str], tgt_lang: str = "", tokenize: str | None = None
) -> dict[str, Any]:
    """Corpus BLEU and chrF (0-100, 2 decimals) of detokenized `hypotheses` against raw `references`, one
    reference each, with sacreBLEU signatures; BLEU's tokenizer as `bleu_metric(tgt_lang, tokenize)` says.
    Raises DataError when the counts differ, ConfigError for a tokenizer `bleu_metric` refuses."""
    if len(hypotheses) != len(references):
        raise DataError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    bleu, chrf = bleu_metric(tgt_lang, tokenize), CHRF()
    b, c = bleu.corpus_score(hypotheses, [references]), chrf.corpus_score(hypotheses, [references])
    return {
        "bleu": round(b.score, 2),
        "chrf": round(c.score, 2),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "sentences": len(references),
    }


def evaluate_model(
    model,
    tokenizer,
    data: DataConfig,
    split: str,
    decode: DecodeConfig,
    limit: int = 0,
    out_dir: str | Path | None = None,
    progress: bool = True,
    tokenize: str | None = None,
    about: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Translate a split's source side and score it against its raw target side (see `score`; BLEU's
    tokenizer follows `data.tgt_lang` unless `tokenize` names one). With `out_dir`, writes
    `hyp.{split}.{tgt_lang}` (one line per sentence) and `eval.{split}.json`. The result names the files it
    read (`source`, `references`: absolute) and the language pair, and carries `about` (e.g. the model's
    provenance, see `model_about`).
    Raises DataError for a missing or malformed split, ConfigError for a refused tokenizer (before decoding)."""
    bleu_metric(data.tgt_lang, tokenize)  # a bad tokenizer fails now, not after decoding the whole split
    files = [os.path.abspath(find_split(data.dir, split, lang)) for lang in (data.src_lang, data.tgt_lang)]
    src, ref = read_parallel(data, split, limit)
    available = len(read_parallel(data, split, 0)[1]) if limit else len(ref)  # a --limit scores a subset: say so
    hyps = translate(
        model,
        tokenizer,
        src,
        decode.beam,
        decode.lenpen,
        decode.max_len_a,
        decode.max_len_b,
        decode.batch_size,
        progress=progress,
    )
    result = {
        "split": split,
        "data": os.path.abspath(data.dir),  # as the config names it (a symlinked corpus stays as named)
        "pair": f"{data.src_lang}-{data.tgt_lang}",
        "source": files[0],
        "references": files[1],
        "beam": decode.beam,
        "lenpen": decode.lenpen,
        **score(hyps, ref, data.tgt_lang, tokenize),
        "sentences_available": available,
        **(about or {}),
    }
    if out_dir is not None:
        out = Path(out_dir)
        write_lines(ModelDir(out).hypotheses(split, data.tgt_lang), hyps)
        ModelDir(out).eval(split).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return result


def model_about(model_dir: str | Path) -> dict[str, Any]:
    """What a result says about the model it scored: its folder (absolute) and its export.json's
    `provenance` (None for a model exported before models carried one)."""
    d = Path(model_dir)
    info = ModelDir(d).info()
    return {"model": {"dir": str(d.resolve()), "provenance": info.get("provenance")}}
