"""BERT students compared at equal distillation: shared weights (SuperShaper-style slicing), layer-wise and
neuron-wise MoS, AutoDistil's sub-space supernets, and the same arch distilled alone; each student found by
search under a parameter budget, exported, and fine-tuned on GLUE with one recipe (no retraining between search
and fine-tuning), beside the teacher (all-MiniLM-L6-v2).

    python benchmarks/bert_students.py [--steps 100] [--budgets 5e6 8e6 15e6] [--jobs 2]
        [--tasks CoLA SST-2 MRPC STS-B RTE] [--train-limit 1000] [--dev-limit 500] [--epochs 3] [--lr 1e-4]
        [--seeds 1]

1. `mosnas run configs/bert_quickstart.yaml` once per generator (shared, layer, neuron) for --steps sandwich
   updates (largest + smallest + one random arch, distilled from the teacher), searching each budget;
2. AutoDistil (`mosnas autodistil configs/bert_autodistil.yaml` with the tiny / small / base
   sub-spaces; --subspaces), --steps // K updates per sub-space: the same total number of updates as one supernet;
3. "alone": the neuron-wise run's searched arch of each budget distilled by itself (a shared supernet that only
   ever trains that arch, initialized from the teacher the same way) for --steps updates, then exported;
4. benchmarks/glue_students.py on every exported student and the teacher (same tasks, subsets, epochs, lr, seeds).

Paper scale (GPUs): --config configs/bert_paper.yaml with sub-spaces of its space (--subspaces, --autodistil-config)
and the full GLUE training sets (--train-limit 0 --dev-limit 0 --epochs 3 --seeds 1 2 3 --lr 2e-5 5e-5 1e-4).
Runs go to benchmarks/work/bert (ignored by git); a finished piece is skipped when the script runs again.
Writes benchmarks/results/bert_students.{md,json} (the GLUE table, then the distillation runs: updates, wall time,
arch, parameters, held-out distillation loss)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT  # noqa: E402

WORK = ROOT / "benchmarks" / "work" / "bert"
CONFIG = "configs/bert_quickstart.yaml"
SUBSPACES = [f"configs/spaces/bert_autodistil_{k}.yaml" for k in ("tiny", "small", "base")]


def size_name(budget: float) -> str:
    return f"params-{budget / 1e6:g}M"


def overrides(args: argparse.Namespace, steps: int) -> list[str]:
    budgets = ",".join(str(int(b)) for b in args.budgets)
    return [f"out_dir={WORK}", f"train.max_steps={steps}", "train.max_minutes=0", f"train.threads={args.threads}",
            f"search.params_budgets=[{budgets}]", "glue.tasks=[]", f"train.seed={args.seed}"] + args.set  # fmt: skip


def run_jobs(jobs: dict[str, list[str]], parallel: int) -> dict[str, float]:
    """Run the commands `parallel` at a time (logs in WORK/logs/NAME.log); the wall seconds of each."""
    (WORK / "logs").mkdir(parents=True, exist_ok=True)
    pending, running, walls = list(jobs.items()), {}, {}
    while pending or running:
        while pending and len(running) < parallel:
            name, cmd = pending.pop(0)
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd[1:])}", flush=True)
            log = open(WORK / "logs" / f"{name}.log", "w")
            running[name] = (subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), time.time(), log)
        time.sleep(5)
        for name, (proc, t0, log) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[name]
            if proc.returncode != 0:
                sys.exit(f"bert_students: {name} failed (exit {proc.returncode}); see {WORK / 'logs' / name}.log")
            walls[name] = round(time.time() - t0, 1)
            print(f"[{time.strftime('%H:%M:%S')}] {name}: done in {walls[name] / 60:.1f} min", flush=True)
    return walls


def distill(args: argparse.Namespace) -> dict[str, float]:
    """Steps 1-2: the three whole-space supernets and AutoDistil's sub-spaces (finished ones skipped)."""
    mosnas = [sys.executable, "-m", "mosnas"]
    jobs = {}
    for gen in ("shared", "layer", "neuron"):
        if not (WORK / f"bert-{gen}" / "results.json").is_file():
            jobs[f"bert-{gen}"] = mosnas + [
                "run",
                args.config,
                f"name=bert-{gen}",
                f"supernet.generator={gen}",
                "--quiet",
            ]
            jobs[f"bert-{gen}"] += overrides(args, args.steps)
    if not (WORK / "bert_autodistil" / "results.json").is_file():
        jobs["bert_autodistil"] = [sys.executable, "-m", "mosnas", "autodistil", args.autodistil_config]
        jobs["bert_autodistil"] += args.subspaces + overrides(args, args.steps // len(args.subspaces))
    return run_jobs(jobs, args.jobs)


def alone(args: argparse.Namespace) -> dict[str, float]:
    """Step 3: each budget's neuron-wise arch distilled by itself for --steps updates, then exported."""
    rows = {r["name"]: r for r in json.loads((WORK / "bert-neuron" / "results.json").read_text())["results"]}
    mosnas, jobs = [sys.executable, "-m", "mosnas"], {}
    for budget in args.budgets:
        name = f"alone-{size_name(budget).removeprefix('params-')}"
        arch = WORK / f"{name}.arch.json"
        arch.write_text(json.dumps(rows[size_name(budget)]["arch"]))
        if (WORK / name / "export" / "student" / "model.safetensors").is_file():
            continue
        train = mosnas + ["train", args.config, f"name={name}", "supernet.generator=shared", "train.sampling=fixed"]
        train += [f"train.fixed_arch={arch}", "--quiet"] + overrides(args, args.steps)
        export = mosnas + [
            "export",
            str(WORK / name),
            "--arch",
            str(arch),
            "--out",
            str(WORK / name / "export" / "student"),
        ]
        jobs[name] = ["bash", "-c", " && ".join(subprocess.list2cmdline(c) for c in (train, export))]
    return run_jobs(jobs, args.jobs)


def students(args: argparse.Namespace) -> dict[str, Path]:
    """Row name -> exported Hugging Face folder, for every method and budget."""
    out = {}
    for gen in ("shared", "layer", "neuron"):
        for b in args.budgets:
            out[f"{gen}-{size_name(b)[7:]}"] = WORK / f"bert-{gen}" / "export" / size_name(b)
    ad = json.loads((WORK / "bert_autodistil" / "results.json").read_text())
    for r in ad["results"]:
        if r.get("kind") == "search":
            base = r["name"].split(" (")[0]
            out[f"autodistil-{base[7:]}"] = Path(ad["subspaces"][r["subspace"]]["run"]) / "export" / base
    for b in args.budgets:
        out[f"alone-{size_name(b)[7:]}"] = WORK / f"alone-{size_name(b)[7:]}" / "export" / "student"
    return out


def distill_table(args: argparse.Namespace, walls: dict[str, float]) -> list[str]:
    """The distillation runs: updates, wall time, and each searched student's arch, parameters and fitness."""
    per_sub = args.steps // len(args.subspaces)
    text = (
        f"Every run: {args.config}'s recipe (its objective, lr, batch, init from the teacher), seed {args.seed}, "
        f"{args.threads} thread(s), up to {args.jobs} runs at a time. Whole-space supernets {args.steps} sandwich "
        f"updates each; AutoDistil {per_sub} per sub-space ({per_sub * len(args.subspaces)} in all); alone: "
        f"{args.steps} updates of the one arch. Fitness = held-out "
        "distillation loss of the inherited student (lower is better)."
    )
    lines = ["", "## Distillation runs", "", text, ""]
    lines += [
        "| run | updates | wall (min) | student | parameters | fitness | arch |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for name in ("bert-shared", "bert-layer", "bert-neuron", "bert_autodistil"):
        res = json.loads((WORK / name / "results.json").read_text())
        for r in (r for r in res["results"] if r.get("kind") == "search"):
            arch = " ".join(f"{k}={v}" for k, v in r["arch"].items())
            cells = [name, str(res["steps"]), f"{walls.get(name, 0) / 60:.1f}", r["name"]]
            cells += [f"{r.get('parameters', 0) / 1e6:.2f}M", f"{r.get('fitness', float('nan')):.4f}", arch]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100, help="sandwich updates of each whole-space supernet")
    ap.add_argument("--budgets", type=float, nargs="+", default=[5e6, 8e6, 15e6], help="parameter budgets")
    ap.add_argument("--jobs", type=int, default=2, help="distillation runs at a time")
    ap.add_argument("--threads", type=int, default=1, help="threads of each run")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--config", default=CONFIG, help="the BERT run config every run starts from")
    ap.add_argument("--autodistil-config", default="configs/bert_autodistil.yaml", help="AutoDistil's run config")
    ap.add_argument("--subspaces", nargs="+", default=SUBSPACES, help="AutoDistil's sub-space YAMLs")
    ap.add_argument("--set", nargs="*", default=[], help="more config overrides for every run (key=value)")
    ap.add_argument("--work", default="benchmarks/work/bert", help="where the runs go")
    ap.add_argument("--name", default="bert_students", help="results name: benchmarks/results/NAME.{md,json}")
    ap.add_argument("--tasks", nargs="+", default=["CoLA", "SST-2", "MRPC", "STS-B", "RTE"])
    ap.add_argument("--train-limit", default="1000")
    ap.add_argument("--dev-limit", default="500")
    ap.add_argument("--epochs", default="3")
    ap.add_argument("--lr", nargs="+", default=["1e-4"])
    ap.add_argument("--seeds", nargs="+", default=["1"])
    args = ap.parse_args()
    global WORK
    WORK = Path(args.work).resolve()
    walls_path = WORK / "walls.json"
    walls = json.loads(walls_path.read_text()) if walls_path.is_file() else {}
    walls.update(distill(args))
    walls.update(alone(args))
    walls_path.write_text(json.dumps(walls, indent=1))
    glue = [sys.executable, str(ROOT / "benchmarks" / "glue_students.py"), "--teacher", "--name", args.name]
    glue += [f"{k}={v}" for k, v in students(args).items()] + ["--tasks", *args.tasks, "--out", str(WORK / "glue")]
    glue += [
        "--train-limit",
        args.train_limit,
        "--dev-limit",
        args.dev_limit,
        "--epochs",
        args.epochs,
        "--max-seq-len",
        "64",
    ]
    glue += ["--lr", *args.lr, "--seeds", *args.seeds, "--threads", str(max(args.threads * args.jobs, 1))]
    print(" ".join(glue[1:]), flush=True)
    subprocess.run(glue, cwd=ROOT, check=True)
    md = RESULTS / f"{args.name}.md"
    md.write_text(md.read_text() + "\n".join(distill_table(args, walls)) + "\n\nCommand: `python benchmarks/"
                  f"bert_students.py {' '.join(sys.argv[1:])}`\n")  # fmt: skip


if __name__ == "__main__":
    main()
