"""`mosnas study`: the study config, its statistics against scipy, the fixed arch set, piece records (skip, refuse,
redo), the plan, and one tiny study end to end (real training, search, latency, fine-tuning and BLEU)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from scipy import stats as sps

from mosnas.cli.main import main
from mosnas.engine.schedule import step_archs
from mosnas.errors import ConfigError
from mosnas.mt.costs import count_parameters
from mosnas.mt.space import load_space
from mosnas.study import stats
from mosnas.study.archs import (
    arch_key,
    elapsed_at,
    matched_steps,
    random_archs,
    reach,
    spanning_archs,
    supernet_pair_flops,
)
from mosnas.study.config import load_study
from mosnas.study.pieces import Piece, Records
from mosnas.study.results import verdict
from tests.conftest import DATA, ROOT, TINY_SPACE

TINY = ROOT / "configs" / "tiny.yaml"


def study_file(tmp_path, extra: str = "", variants: str | None = None):
    """A tiny study (the tiny config on Multi30k) writing into tmp_path."""
    variants = variants or "  shared: [supernet.generator=shared]\n  neuron: [supernet.generator=neuron]\n"
    text = (
        f"name: tiny_study\nbase: {TINY}\noverrides: [data.dir={DATA}]\nvariants:\n{variants}seeds: [1]\n"
        f"supernet_steps: 4\narchs: {{count: 3, pool: 50}}\n"
        f"eval: {{select_sentences: 20, bleu_sentences: 8, resamples: 50}}\n"
        f"retrain: {{max_steps: 4, check_every: 2, valid_bleu: 8, max_checks: 3}}\n"
        f"pareto: {{latency_fractions: [0.3, 0.6, 0.9], finetune_steps: 2}}\n"
        f"work_dir: {tmp_path / 'work'}\nresults_dir: {tmp_path / 'results'}\n{extra}"
    )
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


# -- the study config -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra, variants, fragment",
    [
        ("seedz: [1]\n", None, "unknown config key: seedz; did you mean seeds?"),
        ("archs: {count: 2}\n", None, "archs.count must be >= 3, got 2"),
        ("pareto: {latency_fractions: [0.5, 0.7]}\n", None, "at least 3 budgets"),
        ("retrain: {seeds: [4]}\n", None, "retrain.seeds [4] are not among the study's seeds [1]"),
        ("retrain: {max_steps: 4, check_every: 8}\n", None, "check_every must be <= retrain.max_steps"),
        ("overrides: [train.seed=3]\n", None, "overrides may not set train.seed"),
        ("eval: {bleu_split: nope}\n", None, "missing corpus file"),
        ("", "  a: [data.dir=/tmp]\n", "variant a may not set data.dir"),
        ("", "  a: [supernet.generatr=shared]\n", "variant a: unknown config key in section 'supernet'"),
        ("", "  a: [supernet.generator=nope]\n", "variant a: supernet.generator: unknown value 'nope'"),
        ("", "  'a b': []\n", "variant name 'a b'"),
    ],
)
def test_bad_study_configs_are_one_line_errors(tmp_path, extra, variants, fragment):
    path = study_file(tmp_path, extra, variants)  # a key given again replaces the tiny study's (YAML: the last)
    with pytest.raises(ConfigError) as err:
        load_study(path)
    assert fragment in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert not (tmp_path / "work").exists()


def test_a_missing_base_and_bad_command_lines_are_refused_before_any_work(tmp_path, capsys):
    path = study_file(tmp_path)
    path.write_text(path.read_text().replace(f"base: {TINY}", "base: nowhere.yaml"))
    assert main(["study", str(path)]) == 2
    assert "base config not found" in capsys.readouterr().err
    path = study_file(tmp_path)
    for argv, fragment in (
        (["--seeds", "7"], "--seeds 7: not among the study's seeds [1]"),
        (["--only", "report", "fidelity"], "--only report and --only prepare go alone"),
        (["--only", "fidelty"], "invalid choice: 'fidelty'"),
    ):
        assert main(["study", str(path), *argv]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], lines
    assert not (tmp_path / "work").exists() and not (tmp_path / "results").exists()


def test_defaults_and_paths(tmp_path):
    path = study_file(tmp_path)
    study = load_study(path)
    assert study.steps_scratch == study.supernet_steps == 4 and study.seeds_of("pareto") == (1,)
    assert study.base == str(TINY) and study.variant("neuron") == ("supernet.generator=neuron",)
    text = path.read_text().replace(f"work_dir: {tmp_path / 'work'}\n", "").replace(f"base: {TINY}", "base: base.yaml")
    (tmp_path / "base.yaml").write_text(TINY.read_text().replace("spaces/tiny.yaml", str(TINY_SPACE)))
    path.write_text(text)
    study = load_study(path)  # the base relative to the study file; the work dir by default under benchmarks/work
    assert study.base == str(tmp_path / "base.yaml") and study.work_dir == str(ROOT / "benchmarks/work/tiny_study")


# -- statistics against scipy ----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rank_correlations_equal_scipys(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=12).round(1)  # rounded: ties, which tau-b counts as scipy does
    y = (x + rng.normal(size=12)).round(1)
    assert stats.kendall(x, y) == pytest.approx(sps.kendalltau(x, y).statistic, abs=1e-12)
    assert stats.spearman(x, y) == pytest.approx(sps.spearmanr(x, y).statistic, abs=1e-12)
    assert stats.mae(x, y) == pytest.approx(np.mean(np.abs(x - y)))
    assert stats.mean_gap(x, y) == pytest.approx(np.mean(x - y))
    assert np.isnan(stats.kendall([1, 2, 3], [5, 5, 5])) and np.isnan(stats.spearman([2, 2], [1, 3]))
    with pytest.raises(ConfigError):
        stats.mae([1, 2], [1])


def test_bootstrap_intervals_are_seeded_and_hold_the_estimate():
    rng = np.random.default_rng(3)
    x = rng.normal(20, 3, size=10)
    y = x + rng.normal(1, 0.5, size=10)
    a = stats.with_intervals(x, y, resamples=300, seed=7)
    assert a == stats.with_intervals(x, y, resamples=300, seed=7)  # the same seed, the same intervals
    assert a != stats.with_intervals(x, y, resamples=300, seed=8)
    for name in ("mae", "mean_gap"):
        assert a[name]["lo"] <= a[name]["value"] <= a[name]["hi"]
    mean = lambda idx: float(np.mean(x[idx]))
    lo, hi = stats.bootstrap_ci(mean, len(x), 2000, 0)
    se = np.std(x, ddof=1) / np.sqrt(len(x))  # a percentile interval of a mean is about +-1.96 standard errors
    assert lo == pytest.approx(x.mean() - 1.96 * se, abs=0.5 * se) and hi == pytest.approx(
        x.mean() + 1.96 * se, abs=0.5 * se
    )
    assert stats.bootstrap_ci(lambda idx: float("nan"), 5, 10, 0) == (pytest.approx(np.nan, nan_ok=True),) * 2
    pairs = [(x, y), (x + 1, y)]
    lo, hi = stats.seed_mean_ci(pairs, stats.mae, 300, 0)
    assert lo <= np.mean([stats.mae(x, y), stats.mae(x + 1, y)]) <= hi


def test_mean_std_regret_and_series():
    assert stats.mean_std([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0, "n": 3}
    assert stats.mean_std([4.0, float("nan"), None]) == {"mean": 4.0, "std": None, "n": 1}
    # costs 1..4; budget 3 keeps the first three; the supernet picks index 1 (lowest loss); the best scratch is 2
    r = stats.regret([0.5, 0.1, 0.3, 0.0], [10.0, 12.0, 15.0, 20.0], [1, 2, 3, 4], 3)
    assert r == {"regret": 3.0, "pick": 1, "best": 2, "candidates": 3}
    assert stats.regret([0.5, 0.1], [10.0, 12.0], [1, 2], 2)["regret"] == 0.0
    with pytest.raises(ConfigError, match="no arch within the budget"):
        stats.regret([0.1], [1.0], [5], 4)
    s = stats.summarize_series([{"a-b": 0.5, "a-c": None}, {"a-b": 0.7, "a-c": 0.1}])
    assert s["a-b"]["mean"] == pytest.approx(0.6) and s["a-c"] == {"mean": 0.1, "std": None, "n": 1}


def test_the_verdict_is_generated_from_the_numbers():
    ms = lambda mean, std, n=3: {"mean": mean, "std": std, "n": n}
    summary = lambda mae, tau: {"bleu": {"mae": mae, "kendall_tau": tau}}
    gens = {"shared": "shared", "neuron": "neuron"}
    worse = verdict(
        {"shared": summary(ms(1.0, 0.1), ms(0.7, 0.05)), "neuron": summary(ms(1.5, 0.1), ms(0.5, 0.05))}, gens
    )
    assert "MoS does not beat plain sharing" in worse[-1] and "worse (beyond" in worse[0]
    better = verdict(
        {"shared": summary(ms(1.2, 0.1), ms(0.7, 0.05)), "neuron": summary(ms(0.8, 0.1), ms(0.72, 0.05))}, gens
    )
    assert "neuron lowers the error" in better[-1] and "does not improve the ranking" in better[-1]
    noisy = verdict(
        {"shared": summary(ms(1.2, None, 1), ms(0.7, None, 1)), "neuron": summary(ms(0.8, None, 1), ms(0.9, None, 1))},
        gens,
    )
    assert "one seed" in noisy[0] and "No verdict yet" in noisy[-1]  # one seed decides nothing
    assert not any("MoS does not beat" in line or "lowers the error" in line for line in noisy)
    assert "nothing to compare" in verdict({"neuron": summary(ms(1, 0), ms(1, 0))}, gens)[0]


# -- the fixed arch set and compute accounting -----------------------------------------------------------
@pytest.mark.parametrize(
    "space_file, vocab", [(TINY_SPACE, 200), (ROOT / "configs" / "spaces" / "multi30k.yaml", 6000)]
)
def test_the_arch_set_spans_the_space_and_is_deterministic(space_file, vocab):
    space = load_space(space_file)
    params = lambda a: count_parameters(a, space.qkv_dim, vocab, True)
    archs = spanning_archs(space, params, 8, 1, 2000)
    costs = [params(a) for a in archs]
    assert archs[0] == space.smallest() and archs[-1] == space.largest() and len(set(archs)) == 8
    assert costs == sorted(costs)
    spacing = (costs[-1] - costs[0]) / 7
    assert max(b - a for a, b in zip(costs, costs[1:])) < 1.5 * spacing  # evenly spread: no hole in the range
    assert spanning_archs(space, params, 8, 1, 2000) == archs and spanning_archs(space, params, 8, 2, 2000) != archs
    with pytest.raises(ConfigError, match="needs more distinct archs"):
        spanning_archs(space, params, 8, 1, 3)
    hat = random_archs(space, params, 5, 1)
    assert len(set(hat)) == 5 and hat == random_archs(space, params, 5, 1) and arch_key(hat[0]).startswith("arch-")


def test_compute_accounting():
    space = load_space(TINY_SPACE)
    flops = lambda a: float(count_parameters(a, space.qkv_dim, 100, True))  # any cost function of the arch
    by_hand = sum(3 * flops(a) for s in range(5) for _, a in step_archs(space, "sandwich", 1, 3, s))
    assert supernet_pair_flops(space, flops, 5, "sandwich", 1, 3) == by_hand
    m = matched_steps(1234.0, 987.0, 50, 20)
    assert m["wall"] % m["every"] == 0 and m["flops"] % m["every"] == 0 and m["every"] % 50 == 0
    assert m["wall"] >= 1234 and m["flops"] >= 987 and m["steps"] // m["every"] <= 20 + 1
    assert matched_steps(100.0, 40.0, 50, 20) == {"wall": 100, "flops": 50, "every": 50, "steps": 100}
    curve = [{"step": 0, "valid_bleu": 1.0}, {"step": 50, "valid_bleu": 9.5}, {"step": 100, "valid_bleu": 12.0}]
    assert reach(curve, "valid_bleu", 9.0) == 50 and reach(curve, "valid_bleu", 13.0) is None
    log = [{"step": 50, "elapsed_s": 10.0}, {"step": 100, "elapsed_s": 30.0}]
    assert elapsed_at(log, 0) == 0 and elapsed_at(log, 75) == 20.0 and elapsed_at(log, 25) == 5.0


def test_side_by_side_latency_needs_the_fronts_and_matches_rows_by_arch(tmp_path):
    """The side-by-side piece of a seed reads every variant's finished Pareto piece (refused in one line, before
    any timing, when one is missing); its latencies go to the rows of that seed whose arch it measured."""
    from mosnas.study.plan import latency_piece
    from mosnas.study.side_by_side import attach
    from mosnas.study.work import Study

    study = Study(load_study(study_file(tmp_path)))
    with pytest.raises(ConfigError, match=r"latency s1 needs the piece pareto shared/s1 finished first"):
        latency_piece(study, 1).work()
    a, b, c = {"encoder_layers": 1}, {"encoder_layers": 2}, {"encoder_layers": 3}
    measured = {1: {"archs": [{"arch": a, "latency_ms": 10.0}, {"arch": b, "latency_ms": 20.0}]}}
    rows = [{"seed": 1, "arch": a}, {"seed": 1, "arch": b}, {"seed": 1, "arch": c}, {"seed": 2, "arch": a}]
    assert [r["side_by_side_ms"] for r in attach(rows, measured)] == [10.0, 20.0, None, None]


def test_a_slow_phase_shows_beside_the_median_step_time(tmp_path):
    """The supernets' table: the median seconds per update between log records, so a training time inflated by a
    slow phase (another job) stands out; None without a log."""
    from mosnas.study.report import median_step_s

    steps = [(20, 30.0), (40, 60.0), (60, 150.0), (80, 180.0)]  # 1.5 s/step, then a slow phase at 4.5 s/step
    log = [{"step": s, "elapsed_s": t} for s, t in steps] + [{"step": 80, "valid_nll": 3.0}]
    (tmp_path / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    assert median_step_s(str(tmp_path)) == 1.5 and 180.0 > 80 * 1.5
    assert median_step_s(str(tmp_path / "gone")) is None and median_step_s(None) is None


# -- pieces: skip, refuse, redo -------------------------------------------------------------------------
def test_pieces_are_skipped_refused_or_redone(tmp_path, capsys):
    calls = []
    make = lambda inputs: Piece("scratch", "arch-x/s1", 1, inputs, lambda: calls.append(1) or {"bleu": 1.5})
    records = Records(tmp_path)
    assert records.run(make({"steps": 4})) == {"bleu": 1.5} and len(calls) == 1
    rec = json.loads((tmp_path / "scratch" / "arch-x--s1.json").read_text())
    assert rec["seed"] == 1 and rec["inputs"] == {"steps": 4} and rec["wall_s"] >= 0 and len(rec["inputs_sha"]) == 16
    assert records.run(make({"steps": 4})) == {"bleu": 1.5} and len(calls) == 1  # done: skipped
    assert records.status(make({"steps": 5})) == ("stale", "steps changed 4 -> 5")
    with pytest.raises(
        ConfigError, match=r"scratch arch-x/s1 was made from other inputs \(steps changed 4 -> 5\).*--force"
    ):
        records.run(make({"steps": 5}))
    assert len(calls) == 1 and json.loads((tmp_path / "scratch" / "arch-x--s1.json").read_text())["inputs"] == {
        "steps": 4
    }
    forced = Records(tmp_path, force=True)
    forced.run(make({"steps": 5}))
    assert len(calls) == 2 and forced.status(make({"steps": 5}))[0] == "done"
    assert "== study scratch arch-x/s1: redo (steps changed 4 -> 5)" in capsys.readouterr().err


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    path = study_file(tmp_path)
    assert main(["study", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for line in ("supernet shared/s1", "supernet neuron/s1", "retrain neuron/s1", "pareto shared/s1", "vocab spm"):
        assert line in out
    assert out.count("scratch arch-") == 3 and out.count("\neval ") == 6 and "18 pieces, 0 done" in out
    assert not (tmp_path / "work").exists() and not (tmp_path / "results").exists()
    assert main(["study", str(path), "--dry-run", "--only", "pareto"]) == 0
    out = capsys.readouterr().out
    assert "\nscratch " not in out and "\npareto neuron/s1" in out and "\nretrain " not in out
    assert out.rstrip().count("\nlatency s1 ") == 1  # after both Pareto pieces: their archs side by side
    assert out.index("\nlatency s1 ") > out.index("\npareto neuron/s1")


def test_the_report_is_rebuilt_while_another_process_runs_the_study(tmp_path, capsys):
    """A running study holds its seeds' locks: a second runner is refused in one line naming it, while
    `--only report` reads the finished pieces and writes the report beside it."""
    import subprocess

    path = study_file(tmp_path)
    lock_dir = tmp_path / "work" / "locks" / "s1"
    lock_dir.mkdir(parents=True)
    code = f"from mosnas.workspace.lock import lock_run; lock_run({str(lock_dir)!r}); print('held', flush=True); "
    holder = subprocess.Popen(
        [sys.executable, "-c", code + "import time; time.sleep(60)"], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["study", str(path), "--only", "pareto", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and str(holder.pid) in err, err
        assert main(["study", str(path), "--only", "report", "--quiet"]) == 0
        page = (tmp_path / "results" / "tiny_study.md").read_text()
        assert "Nothing scored both ways yet." in page and "**Progress: 0 of 18 pieces finished** (vocab 0/1" in page
    finally:
        holder.kill()
        holder.wait()


def test_the_shipped_studies_load_and_plan(tmp_path):
    """The CPU study: every piece estimated well under an hour on 2 cores; the paper-scale one: HAT's protocol
    on a corpus folder with WMT's split names, supernets through torchrun."""
    from mosnas.study.plan import plan
    from mosnas.study.work import Study

    study = Study(load_study(ROOT / "configs" / "studies" / "multi30k.yaml"))
    pieces = plan(study, ("fidelity", "retrain", "pareto"), study.cfg.seeds)
    assert {n for n, _ in study.cfg.variants} == {"shared", "layer", "neuron", "kshot"} and len(study.cfg.seeds) >= 3
    assert study.cfg.archs.count >= 8 and study.cfg.eval.bleu_split == "test_2016_flickr"
    assert max(p.estimate_s for p in pieces) < 45 * 60 and 8 * 60 < pieces[2].estimate_s < 20 * 60, pieces[2]
    wmt = tmp_path / "wmt"
    wmt.mkdir()
    for split, ours in (("train", "train"), ("valid", "val"), ("test", "test_2016_flickr")):
        for lang in ("en", "de"):
            (wmt / f"{split}.{lang}.gz").symlink_to(DATA / f"{ours}.{lang}.gz")
    paper = load_study(ROOT / "configs" / "studies" / "wmt14_hat.yaml", str(wmt))
    assert paper.archs.count == 30 and paper.archs.method == "random" and paper.launch.startswith("torchrun")
    assert paper.dense_update_freq == 8 * 16 and paper.supernet_steps == 40000


# -- one tiny study end to end ---------------------------------------------------------------------------
@pytest.mark.slow
def test_a_tiny_study_end_to_end(tmp_path, capsys):
    """Two generators, three archs, one seed, a few steps: every piece, the report, a second call that redoes
    nothing, and a changed recipe refused before any work."""
    path = study_file(tmp_path, f"grad_conflict_every: 2\nlaunch: {sys.executable}\n")  # supernets in subprocesses
    assert main(["study", str(path), "--quiet"]) == 0
    capsys.readouterr()
    data = json.loads((tmp_path / "results" / "tiny_study.json").read_text())
    assert "Progress: all 18 pieces finished." in (tmp_path / "results" / "tiny_study.md").read_text()
    assert (tmp_path / "results" / "tiny_study_fidelity.png").stat().st_size > 1000
    assert (tmp_path / "results" / "tiny_study_pareto.png").stat().st_size > 1000
    per_seed = data["fidelity"]["per_seed"]
    assert [(r["variant"], r["seed"], r["archs"]) for r in per_seed] == [("shared", 1, 3), ("neuron", 1, 3)]
    for r in per_seed:  # the same archs and the same scratch numbers for both generators
        assert r["pairs"]["scr_bleu"] == per_seed[0]["pairs"]["scr_bleu"] and all(x > 0 for x in r["pairs"]["sup_loss"])
    assert set(data["grad_conflict"]["neuron"]["over_seeds"]) == {
        "largest-smallest",
        "largest-random",
        "smallest-random",
    }
    work = tmp_path / "work"
    configs = [
        json.loads(
            json.dumps(__import__("yaml").safe_load((work / "supernets" / f"{v}-s1" / "config.yaml").read_text()))
        )
        for v in ("shared", "neuron")
    ]
    assert (
        configs[0]["data"] == configs[1]["data"]
        and configs[0]["train"]["max_steps"] == configs[1]["train"]["max_steps"] == 4
    )
    for rt in data["retrain"]:
        c, k = rt["control"], rt["compute"]
        assert c["wall"] % c["every"] == 0 and c["flops"] % c["every"] == 0 and c["steps"] == max(c["wall"], c["flops"])
        assert {r["step"] for r in c["curve"]} >= {c["wall"], c["flops"]}
        assert k["total_s"] == pytest.approx(k["supernet_s"] + k["search_s"] + k["finetune_s"], abs=0.2)
        assert k["flops"]["total"] == pytest.approx(sum(k["flops"][p] for p in ("supernet", "search", "finetune")))
    kinds = [(r["variant"], r["kind"]) for r in data["pareto"]]
    assert kinds.count(("neuron", "finetuned")) == 3 and kinds.count(("shared", "search")) == 3
    assert all(r["measured_latency_ms"] > 0 for r in data["pareto"])
    assert all(s["median_s_per_step"] > 0 for s in data["supernets"])
    side = data["pareto_latency"]["1"]  # every arch of both fronts timed together: one latency per arch
    assert len(side["archs"]) == len({json.dumps(r["arch"], sort_keys=True) for r in data["pareto"]})
    assert all(r["side_by_side_ms"] > 0 for r in data["pareto"]) and side["blocks"] == 3
    for r in data["pareto"]:  # an arch and its fine-tuned copy share one side-by-side latency
        twin = [q for q in data["pareto"] if q["arch"] == r["arch"]]
        assert {q["side_by_side_ms"] for q in twin} == {r["side_by_side_ms"]}
    assert "- Side by side, seed 1: " in (tmp_path / "results" / "tiny_study.md").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in (work / "pieces").glob("*/*.json")}
    targets = {r["target"]["piece"] for r in data["retrain"]}  # the searched archs trained from scratch: shared
    planned = {f"{a['key']}/s1" for a in data["archs"]}  # with the fixed set's when the same arch
    assert len(stamps) == 18 + len(targets - planned)

    assert main(["study", str(path), "--quiet"]) == 0  # everything done: nothing redone
    assert "== study" not in capsys.readouterr().err
    assert stamps == {p: p.stat().st_mtime_ns for p in (work / "pieces").glob("*/*.json")}
    path.write_text(path.read_text().replace("supernet_steps: 4", "supernet_steps: 5"))
    assert main(["study", str(path), "--quiet"]) == 2  # another recipe: refused, one line, before any work
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.max_steps changed 4 -> 5" in err[0] and "--force" in err[0]
    assert stamps == {p: p.stat().st_mtime_ns for p in (work / "pieces").glob("*/*.json")}


def test_pieces_section_says_why_finished_pieces_outnumber_the_plan():
    """A retraining piece adds its winner's from-scratch run when the winner is not a fixed arch: the pieces table then
    holds more rows than the plan counted, and the page says so instead of '147 pieces' under 'all 143 finished'."""
    from mosnas.study.markdown import _pieces

    rows = [
        {"kind": k, "key": key, "seed": 1, "wall_s": 60.0, "inputs_sha": "0" * 16}
        for k, key in (("supernet", "shared/s1"), ("retrain", "shared/s1"), ("scratch", "arch-0000/s1"))
    ]
    data = {"pieces": rows, "meta": {"commands": [], "wall_s": 180.0, "progress": {"kinds": {"x": [2, 2]}}}}
    head = _pieces(data, "configs/studies/multi30k.yaml")[2]
    assert head.startswith("3 pieces (2 of the plan, 1 added while running:")
    data["meta"]["progress"]["kinds"] = {"x": [2, 5]}  # a study half done: the surplus is over the finished ones
    assert _pieces(data, "configs/studies/multi30k.yaml")[2].startswith("3 pieces (2 of the plan, 1 added")
    data["meta"]["progress"]["kinds"] = {"x": [3, 3]}
    assert _pieces(data, "configs/studies/multi30k.yaml")[2].startswith("3 pieces, 0.05 h in all")
    del data["meta"]["progress"]
    assert _pieces(data, "configs/studies/multi30k.yaml")[2].startswith("3 pieces, 0.05 h in all")
