"""Shared bits of the benchmark scripts: where results go and what machine produced them."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def machine() -> dict[str, Any]:
    """Date, platform, CPU model and the CPU flags that decide fp32/bf16 speed (AVX2, AVX-512 BF16, AMX)."""
    import torch

    from mosnas import hardware

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **hardware.machine(),
        "machine": platform.platform(),  # the OS and kernel (hardware.machine's "machine" is the architecture)
        "torch": torch.__version__,
    }


def relative(path: str | Path) -> str:
    """A path as a results file records it: relative to the repository when inside it, else its name only (no
    machine's absolute paths in results)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def write(name: str, meta: dict[str, Any], rows: list[dict[str, Any]], markdown: list[str]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    head = (
        f"Date {meta['date']}; `{meta['machine']}`; CPU {meta['cpu']} ({meta['cores']} cores); torch {meta['torch']}; "
        f"CPU flags: {' '.join(meta.get('cpu_flags', [])) or 'unknown'}; native bf16 (oneDNN): "
        f"{'yes' if meta.get('native_bf16') else 'no'}."
    )
    (RESULTS / f"{name}.md").write_text("\n".join([markdown[0], "", head, *markdown[1:]]) + "\n")
    print("\n".join(markdown))
