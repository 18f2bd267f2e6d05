"""Keys of earlier mosnas versions, translated so their configs and run folders keep loading."""

from __future__ import annotations

from typing import Any

from mosnas.settings import convert


def migrate(raw: dict[str, Any]) -> dict[str, Any]:
    """Keys of earlier mosnas versions, so their configs and run folders keep loading:
    `train.bf16: true|false` is `train.precision: bf16|fp32` (unless precision is given too)."""
    train = raw.get("train")
    if isinstance(train, dict) and "bf16" in train:
        train = dict(train)
        legacy = convert("train.bf16", train.pop("bf16"), bool)
        train.setdefault("precision", "bf16" if legacy else "fp32")
        raw = {**raw, "train": train}
    return raw
