"""Evaluation the way the field reports it: detokenized sacreBLEU and chrF with signatures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sacrebleu.metrics import BLEU, CHRF

from mosnas.config import DataConfig, DecodeConfig
from mosnas.data import read_parallel
from mosnas.decode import translate
from mosnas.errors import DataError


def score(hypotheses: list[str], references: list[str]) -> dict[str, Any]:
    """Corpus BLEU and chrF of detokenized hypotheses against raw references, with signatures."""
    if len(hypotheses) != len(references):
        raise DataError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    bleu, chrf = BLEU(), CHRF()
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
) -> dict[str, Any]:
    """Translate a split's source side and score it against its raw target side."""
    src, ref = read_parallel(data, split, limit)
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
        "data": str(data.dir),
        "pair": f"{data.src_lang}-{data.tgt_lang}",
        "beam": decode.beam,
        "lenpen": decode.lenpen,
        **score(hyps, ref),
    }
    if out_dir is not None:
        out = Path(out_dir)
        (out / f"hyp.{split}.{data.tgt_lang}").write_text("\n".join(hyps) + "\n", encoding="utf-8")
        (out / f"eval.{split}.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    return result
