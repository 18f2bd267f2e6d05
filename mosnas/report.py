"""Reports of a run: Markdown summary and the Pareto plot of BLEU against measured latency."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _arch_short(a: dict[str, Any]) -> str:
    """E.g. 'e256/d192 L3 ffn 768,512,1024 | 512,256' - enough to tell archs apart in a table."""
    return (
        f"e{a['encoder_embed_dim']}/d{a['decoder_embed_dim']} dec{len(a['decoder_ffn_dims'])} "
        f"ffn {','.join(map(str, a['encoder_ffn_dims']))} ; {','.join(map(str, a['decoder_ffn_dims']))}"
    )


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _count(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def summary_markdown(results: dict[str, Any]) -> str:
    rows = results["results"]
    lines = [f"# {results['name']}: generator `{results['generator']}`, {results['steps']} training steps", ""]
    lp = results.get("latency_predictor")
    if lp:
        m, lin = lp["mlp"], lp["linear"]
        lines += [
            f"Latency predictor ({lp['train_samples']} measured archs, {lp['heldout_samples']} held out): "
            f"MLP RMSE {m['rmse_ms']:.2f} ms, MAPE {m['mape_pct']:.1f}%, Kendall tau {m['kendall_tau']:.3f}; "
            f"linear baseline MAPE {lin['mape_pct']:.1f}%, tau {lin['kendall_tau']:.3f}.",
            "",
        ]
    lines += [
        "| subnet | arch | params | params (HAT) | FLOPs | budget ms | predicted ms | measured ms | BLEU | chrF |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {_arch_short(r['arch'])} | {r['parameters']:,} | {_count(r.get('parameters_hat'))} | "
            f"{r['flops'] / 1e6:,.1f}M | "
            f"{_ms(r.get('budget_ms'))} | {_ms(r.get('predicted_latency_ms'))} | "
            f"{_ms(r.get('measured_latency_ms'))} | {r['bleu']:.2f} | {r['chrf']:.2f} |"
        )
    searched = [r for r in rows if "random_search_fitness" in r]
    if searched:
        lines += [
            "",
            "Search fitness (supernet validation NLL, lower is better) at equal evaluation counts:",
            "",
            "| budget | evolutionary | random |",
            "|---|---:|---:|",
        ]
        lines += [f"| {r['name']} | {r['fitness']:.4f} | {r['random_search_fitness']:.4f} |" for r in searched]
    if rows:
        lines += [
            "",
            f"BLEU signature: `{rows[0]['bleu_signature']}`",
            "",
            f"chrF signature: `{rows[0]['chrf_signature']}`",
            "",
            f"Test split `{rows[0]['split']}`, beam {rows[0]['beam']}; latency: HAT's protocol (one sentence, "
            "beam search), median of repeats, see latency/report.json for the device. Params count the exported "
            "model (one embedding table when shared); params (HAT) leave out embeddings and the output layer, "
            "as HAT's tables do.",
        ]
    return "\n".join(lines) + "\n"


def pareto_plot(results: dict[str, Any], path: str | Path) -> Path:
    """BLEU against measured latency for every subnet of the run (searched, fine-tuned, references)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"reference": ("s", "tab:gray"), "search": ("o", "tab:blue"), "finetuned": ("^", "tab:green")}
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for kind, (marker, color) in styles.items():
        rows = [r for r in results["results"] if r["kind"] == kind]
        if rows:
            ax.scatter(
                [r["measured_latency_ms"] for r in rows],
                [r["bleu"] for r in rows],
                marker=marker,
                c=color,
                label=kind,
                zorder=3,
            )
            for r in rows:
                ax.annotate(
                    r["name"],
                    (r["measured_latency_ms"], r["bleu"]),
                    fontsize=7,
                    xytext=(4, 3),
                    textcoords="offset points",
                )
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("BLEU (sacreBLEU)")
    ax.set_title(f"{results['name']} ({results['generator']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
