"""Peak memory: the supernet's training peak per weight generator, and exported models' inference peak.

    python benchmarks/memory.py [--threads 2]

Builds the bench supernet (configs/bench_multi30k.yaml: Multi30k space, 2 experts) with each generator and
measures one full sandwich training step (largest + smallest + 1 random arch, forward + backward + AdamW, its
first step: the optimizer's state is allocated in it) on the same real Multi30k batch with
mosnas.latency.memory.peak_memory (CUDA: max_memory_allocated; CPU: torch.profiler's allocations, a lower bound on
transient peaks inside one operator); then the inference peak (HAT's latency protocol) of the largest and
smallest exported arch. Writes benchmarks/results/memory.{md,json}.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, write  # noqa: E402

sys.path.insert(0, str(ROOT))

from mosnas import tune_malloc  # noqa: E402

tune_malloc()

import torch  # noqa: E402

from mosnas import mt  # noqa: E402
from mosnas.config import load_config  # noqa: E402
from mosnas.core.supernet import Supernet  # noqa: E402
from mosnas.engine.schedule import step_archs  # noqa: E402
from mosnas.latency.memory import peak_memory  # noqa: E402
from mosnas.mt.data import load_parallel, read_parallel, train_tokenizer  # noqa: E402
from mosnas.mt.space import load_space  # noqa: E402
from mosnas.mt.task import train_step  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(ROOT / "configs" / "bench_multi30k.yaml")
    space = load_space(ROOT / cfg.supernet.space)
    src, tgt = read_parallel(cfg.data, cfg.data.train)
    sp = train_tokenizer(src + tgt, cfg.data.vocab_size, ROOT / "benchmarks" / "work" / "spm.model")
    data, _ = load_parallel(cfg.data, cfg.data.train, sp, max_len=cfg.data.max_len)
    batch, device = data.collate(data.batches(0)[0]), torch.device("cpu")
    rows = []
    for gen in ("shared", "layer", "neuron"):
        torch.manual_seed(0)
        net = Supernet(space, sp.get_piece_size(), replace(cfg.supernet, generator=gen), mt)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        archs = step_archs(space, "sandwich", 1, 1, 0)

        def step(net=net, opt=opt, archs=archs) -> None:
            train_step(net, batch, archs, 0.1, 0.0, device, False)
            opt.step()
            opt.zero_grad(set_to_none=True)

        m = peak_memory(net, step, device, warmup=False, grad=True)
        params = sum(p.numel() for p in net.parameters())
        rows.append({"what": f"training step, {gen}", "parameters": params, **m})
    lc = cfg.latency
    for name in ("largest", "smallest"):
        model = net.export(space.parse_arch(name))
        m = mt.memory(model, lc, device, torch.float32)
        rows.append({"what": f"inference, {name} arch", "parameters": sum(p.numel() for p in model.parameters()), **m})
    md = [
        "# Peak memory: supernet training per generator, exported models at inference",
        "",
        f"Supernet of `configs/bench_multi30k.yaml` (space {space.name}, {cfg.supernet.num_experts} experts), one "
        f"sandwich step (3 archs, forward + backward + AdamW's first step) on one real batch (max_tokens "
        f"{cfg.data.max_tokens}), fp32, {args.threads} threads; inference: HAT's latency protocol (source "
        f"{lc.src_len} tokens, beam {lc.beam}, {lc.tgt_len} steps). Method: {rows[0]['method']}.",
        "",
        "| what | parameters | weights MiB | peak beyond weights MiB | peak MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        md.append(f"| {r['what']} | {r['parameters']:,} | {r['weights_mb']:.1f} | {r['activations_mb']:.1f} | ")
        md[-1] += f"{r['peak_mb']:.1f} |"
    md += ["", "Training: beyond the weights, gradients, AdamW's two moments and the activations of the step."]
    write("memory", {**machine(), "threads": args.threads}, rows, md)


if __name__ == "__main__":
    main()
