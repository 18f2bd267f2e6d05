"""`mosnas latency` and `mosnas search`: measure and predict latency on the device at hand (or fit a predictor
from a dataset measured elsewhere, HAT's CSVs included), and search under a budget whose winner is re-measured."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from mosnas.cli.args import setting


def add_commands(sub: argparse._SubParsersAction) -> None:
    la = sub.add_parser(
        "latency",
        help="measure archs and the per-layer table, fit and pick a latency predictor; or --fit a dataset",
        description="mosnas latency RUN [--dataset FILE.csv]   |   mosnas latency --fit DATASET --out DIR",
    )
    la.add_argument("run", nargs="?", help="run folder (not with --fit)")
    setting(la, "--samples", "latency.num_samples", default=None, help="archs to measure (default: the run's)")
    setting(la, "--device", "latency.device", default=None, help="cpu, cuda, cuda:N or auto (default: the run's)")
    setting(la, "--threads", "latency.threads", default=None, help="CPU threads while timing (default: the run's)")
    la.add_argument("--dataset", help="also write the measured archs as a portable latency dataset (CSV)")
    la.add_argument("--fit", metavar="DATASET", help="fit a predictor on a dataset (ours or HAT's .csv[.gz])")
    la.add_argument("--out", help="with --fit: the predictor folder to write")
    setting(la, "--holdout", "latency.holdout", default=None, help="with --fit: held-out fraction (default 0.2)")
    la.add_argument("--quiet", action="store_true", help="no progress bars")
    la.set_defaults(handler=_latency)

    se = sub.add_parser("search", help="evolutionary search under a budget, then export and evaluate the winner")
    se.add_argument("run", help="run folder")
    setting(se, "--latency-ms", "search.latency_ms", default=None, help="latency budget, ms (needs a predictor)")
    setting(
        se,
        "--latency-fraction",
        "search.latency_fractions",
        default=None,
        help="latency budget as a fraction of the predicted span: 0 = the smallest arch, 1 = the largest",
    )
    setting(
        se,
        "--max-params",
        "search.max_params",
        help="parameters of the exported model, embeddings included; 0: none; e.g. 5M, 250k",
    )
    setting(
        se, "--max-flops", "search.max_flops", help="forward FLOPs of one input (see mosnas config search); 0: none"
    )
    setting(se, "--max-memory-mb", "search.max_memory_mb", help="estimated peak inference memory limit, MiB")
    se.add_argument("--predictor", help="a predictor folder from `mosnas latency --fit` (another device's)")
    se.add_argument(
        "--extrapolate",
        action="store_true",
        help="use a --predictor although this run's space leaves the feature range it was fitted on",
    )
    se.add_argument("--data", help="corpus folder of the validation split (default: the run's data.dir)")
    se.add_argument("--quiet", action="store_true", help="no progress bars")
    se.set_defaults(handler=_search)


def _fit(args: argparse.Namespace) -> int:
    from mosnas.errors import ConfigError
    from mosnas.latency.datasets import fit_dataset

    if args.run or args.dataset or args.samples or args.device or args.threads is not None:
        raise ConfigError("--fit takes a dataset and --out only: no run folder or measurement options")
    if not args.out:
        raise ConfigError("--fit needs --out DIR: the predictor folder to write")
    pred, report = fit_dataset(args.fit, args.holdout or 0.2)
    pred.save(args.out, about=report)
    for name, m in report["predictors"].items():
        print(
            f"{name:6s} held-out ({report['heldout_rows']} archs, trained on {report['train_rows']}): "
            f"RMSE {m['rmse_ms']:.3f} ms  MAPE {m['mape_pct']:.2f}%  Kendall tau {m['kendall_tau']:.3f}"
        )
    print(f"chosen: {report['chosen']} ({report['why']}); predictor written to {args.out}")
    return 0


def _latency(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from mosnas.errors import ConfigError

    if args.fit:
        return _fit(args)
    if not args.run or args.out:
        raise ConfigError("give a run folder (or --fit DATASET --out DIR)")
    from mosnas.engine.load import load_run
    from mosnas.pipeline.latency import latency_stage

    run = load_run(args.run)
    given = {"num_samples": args.samples, "device": args.device, "threads": args.threads, "holdout": args.holdout}
    lc = replace(run.cfg.latency, **{k: v for k, v in given.items() if v is not None})
    replace(run.cfg, latency=lc).validate()  # --samples against the run's latency.holdout
    report = latency_stage(run, lc, progress=not args.quiet)
    for name in ("mlp", "linear", "table"):
        m = report[name]
        print(
            f"{name:6s} held-out ({report['heldout_samples']} archs; {m['measurements']} measurements): "
            f"RMSE {m['rmse_ms']:.3f} ms  MAPE {m['mape_pct']:.2f}%  Kendall tau {m['kendall_tau']:.3f}"
        )
    noise = report["noise"]
    if noise["rel_std_pct"] is not None:
        print(
            f"noise floor: one arch re-measured {noise['n']} times: std {noise['rel_std_pct']:.2f}%, "
            f"mean deviation {noise['mape_pct']:.2f}%; {report['seconds_per_arch']:.2f} s per measured arch"
        )
    print(f"chosen: {report['chosen']} ({report['why']}); scatter plot: {run.dir.latency / 'scatter.png'}")
    if report["heldout_samples"] < MIN_HELDOUT:
        print(
            f"warning: only {report['heldout_samples']} held-out archs: tau and MAPE from so few mean little "
            f"(measure more: --samples {int(MIN_HELDOUT / lc.holdout) + 1})"
        )
    lo, hi = _span(run)
    print(
        f"search accepts latency budgets from {lo:.2f} ms (the smallest arch, predicted) to {hi:.2f} ms (the "
        f"largest): mosnas search {args.run} --latency-ms X, or --latency-fraction F (0..1 of that span)"
    )
    if args.dataset:
        from mosnas.latency.datasets import write_dataset
        from mosnas.latency.measure import read_samples

        samples = [s for s in read_samples(run.dir.latency / "samples.jsonl") if not s.get("reference")]
        write_dataset(args.dataset, run.space, samples, report["precision"]["precision"])
        print(f"latency dataset ({len(samples)} archs): {args.dataset}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from mosnas.engine.load import load_run, with_data
    from mosnas.errors import ConfigError

    run = with_data(load_run(args.run), args.data)
    if args.latency_fraction is not None:
        if args.latency_ms is not None or args.predictor:
            raise ConfigError(
                "--latency-fraction is a fraction of this run's predicted span: not with --latency-ms or --predictor"
            )
        lo, hi = _span(run)
        args.latency_ms = math.ceil((lo + args.latency_fraction * (hi - lo)) * 100) / 100
        args.label = f"latency-frac{args.latency_fraction:g}"  # the pipeline's name: stable when the predictor is refit
    if args.predictor and args.latency_ms is None:
        raise ConfigError("--predictor is for a latency budget: give --latency-ms too")
    if args.latency_ms is None and not (args.max_params or args.max_flops or args.max_memory_mb):
        return _config_budgets(run, args)
    if args.latency_ms is not None and not args.predictor and not (run.dir.latency / "predictor.json").is_file():
        raise ConfigError(f"a latency budget needs the predictor: run `mosnas latency {args.run}` first")
    if args.predictor and not (Path(args.predictor) / "predictor.json").is_file():
        raise ConfigError(f"--predictor {args.predictor}: no predictor.json there (see `mosnas latency --fit`)")
    if args.predictor and not args.extrapolate:
        _check_predictor_range(args.predictor, run)
    limits = replace(run.cfg.search, max_params=args.max_params, max_flops=args.max_flops)
    sc = replace(limits, max_memory_mb=args.max_memory_mb)
    label = getattr(args, "label", None)
    return _search_and_report(run, sc, args.latency_ms, args.predictor, progress=not args.quiet, label=label)


def _check_predictor_range(folder: str, run) -> None:
    """ConfigError when a dataset's predictor (`latency --fit`) would extrapolate over the run's space."""
    from mosnas.errors import ConfigError
    from mosnas.latency.datasets import FeaturePredictor
    from mosnas.latency.load import load_predictor

    predictor = load_predictor(folder, run.space, run.family.latency_parts)
    far = predictor.outside_range(run.space) if isinstance(predictor, FeaturePredictor) else []
    if far:
        raise ConfigError(
            f"--predictor {folder} was fitted on other archs than space '{run.space.name}' holds: "
            f"{'; '.join(far[:2])}{' ...' if len(far) > 2 else ''} (--extrapolate to use it anyway)"
        )


MIN_HELDOUT = 10  # fewer held-out archs than this: the predictor's tau and MAPE are too noisy to judge it by


def _span(run) -> tuple[float, float]:
    """The run's predicted latency of its smallest and largest arch (ms): the budgets a search accepts."""
    from mosnas.pipeline.latency import predictor_of

    predictor = predictor_of(run)[0]
    return predictor(run.space.smallest()), predictor(run.space.largest())


def _config_budgets(run, args: argparse.Namespace) -> int:
    """`mosnas search RUN` with no budget option: every budget of the run's config, one search each."""
    from dataclasses import replace

    from mosnas.errors import ConfigError
    from mosnas.pipeline.search import budgets

    sc = run.cfg.search
    if not (sc.latency_ms or sc.latency_fractions or sc.params_budgets):
        raise ConfigError(
            "give a budget (--latency-ms, --latency-fraction, --max-params, --max-flops, --max-memory-mb): "
            "the run's config has none (search.latency_ms, search.latency_fractions, search.params_budgets)"
        )
    span = _span(run) if sc.latency_fractions else None
    for name, limit in budgets(sc, span).items():
        print(f"== search {name} (from the run's config)")
        _search_and_report(run, sc, limit, None, progress=not args.quiet, name=name)
    for size in sc.params_budgets:
        print(f"== search params-{size / 1e6:g}M (from the run's config)")
        _search_and_report(run, replace(sc, max_params=size), None, None, not args.quiet, f"params-{size / 1e6:g}M")
    return 0


def _search_and_report(
    run,
    sc,
    latency_ms: float | None,
    predictor: str | None,
    progress: bool,
    name: str | None = None,
    label: str | None = None,
) -> int:
    """Search, re-measure the winner against a latency budget of the run's own predictor (fallbacks when over),
    export, evaluate and print. A --predictor of another device predicts there: its budget is not checked by
    the latency measured here (which is printed all the same)."""
    from mosnas.pipeline.run import export_and_score
    from mosnas.pipeline.search import search_stage
    from mosnas.pipeline.winner import describe_check, hold_budget

    parts = [label or f"latency-{latency_ms:g}ms"] if latency_ms is not None else []  # every limit in the name
    parts += [f"{k}-{v / 1e6:g}M" for k, v in (("params", sc.max_params), ("flops", sc.max_flops)) if v]  # as run's
    parts += [f"memory-{sc.max_memory_mb:g}MiB"] if sc.max_memory_mb else []
    name = name or "_".join(parts) + ("-" + Path(predictor).name if predictor else "")
    found = search_stage(run, sc, name, latency_ms, run.cfg.latency, progress, predictor_dir=predictor)
    arch, export, check = run.space.arch_from_dict(found["evolution"]["arch"]), run.dir.export(name), None
    if latency_ms is not None and not predictor:
        arch, export, check = hold_budget(run, found, name, latency_ms, run.cfg.latency)
    row = export_and_score(run, arch, export, run.cfg.latency, progress)
    evo = found["evolution"]
    print(f"best arch ({evo['num_evaluations']} evaluations): {arch.to_json()}")
    rnd = f" (random search, same evaluations: {found['random']['fitness']:.4f})" if "random" in found else ""
    print(f"search fitness {evo['fitness']:.4f}{rnd}")
    print(
        f"parameters {row['parameters']:,}  FLOPs {row['flops']:,}  peak memory {row['peak_memory_mb']:.1f} MiB"
        + "  latency "
        + (f"predicted {found['predicted_latency_ms']} ms, " if found["predicted_latency_ms"] else "")
        + f"measured here {row['measured_latency_ms']:.2f} ms"
    )
    if check:
        print(describe_check(check))
    elif predictor:
        print(f"latency predicted by {predictor} (another device's): the budget is not checked by measuring here")
    metrics = dict(run.family.METRICS)
    scores = [f"{metrics[k]} {v:.4g}" for k, v in row.items() if k in metrics and isinstance(v, (int, float))]
    print("  ".join(scores + [str(row.get("split", ""))]))
    print(f"exported to {export}")
    return 0
