"""Portable latency datasets: HAT's published CSVs (read as they are) and ours, and predictors fit on them."""

import gzip
import random
from pathlib import Path

import numpy as np
import pytest

from mosnas.cli.main import main
from mosnas.errors import ConfigError
from mosnas.latency.datasets import (
    FeaturePredictor,
    feature_names,
    fit_dataset,
    raw_features,
    read_dataset,
    write_dataset,
)
from mosnas.mt.space import load_space
from tests.conftest import ROOT

HAT = ROOT.parent / "shared" / "data" / "hat-latency"
XEON = HAT / "wmt14ende_cpu_xeon_all.csv.gz"
HAT_SPACE = ROOT / "configs" / "spaces" / "hat_wmt14_ende.yaml"


@pytest.mark.parametrize("path", sorted(HAT.glob("*_all.csv.gz")), ids=lambda p: p.name.split("_all")[0])
def test_hat_datasets_load_with_our_feature_names(path):
    data = read_dataset(path)
    assert data["source"] == "hat" and data["rows"] == 2000 and data["x"].shape == (2000, 10)
    space = load_space(HAT_SPACE)
    assert sorted(data["features"]) == sorted(feature_names(space))  # HAT's 10 features are our embedding's
    col = dict(zip(data["features"], data["x"].T))
    assert set(col["encoder_embed_dim"]) == {512.0, 640.0} and set(col["decoder_layers"]) == set(range(1, 7))
    assert col["decoder_spans"].min() == 1.0 and col["decoder_spans"].max() == 3.0  # HAT's -1, 1, 2 coded 1, 2, 3
    assert (data["y"] > 0).all()


def test_our_hat_space_lies_within_hat_data():
    """Archs of configs/spaces/hat_wmt14_ende.yaml have features inside the measured ranges: predictions for
    them interpolate HAT's data (its 2,000 random archs never averaged 8 heads over 6 encoder layers, so the
    space's corner, all heads 8, is a mild extrapolation)."""
    data, space = read_dataset(XEON), load_space(HAT_SPACE)
    lo, hi = data["x"].min(0), data["x"].max(0)
    order = [feature_names(space).index(n) for n in data["features"]]
    rng = random.Random(0)
    inside = []
    for arch in [space.smallest()] + [space.sample(rng) for _ in range(300)]:
        x = np.asarray(raw_features(space, arch))[order]
        inside.append(bool(((lo <= x) & (x <= hi)).all()))
    assert inside[0] and sum(inside) / len(inside) > 0.95, sum(inside)


def test_a_predictor_fit_on_hat_xeon_data_ranks_held_out_archs(tmp_path):
    pred, report = fit_dataset(XEON, holdout=0.2, seed=0, models=("linear",))
    lin = report["predictors"]["linear"]
    assert report["rows"] == 2000 and report["heldout_rows"] == 400 and report["chosen"] == "linear"
    assert lin["kendall_tau"] > 0.85 and lin["mape_pct"] < 6.0, lin  # HAT reports about 5-6% on these
    pred.save(tmp_path / "xeon", about=report)
    space = load_space(HAT_SPACE)
    loaded = FeaturePredictor.load(tmp_path / "xeon").for_space(space)
    small, large = loaded(space.smallest()), loaded(space.largest())
    lo, hi = report["latency_ms_range"]
    assert lo * 0.8 < small < large < hi * 1.2, (small, large, lo, hi)
    assert loaded.predict([space.largest()]) == pytest.approx(pred.for_space(space).predict([space.largest()]))


def test_our_dataset_round_trips(space, tmp_path):
    rng = random.Random(2)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(12)))
    samples = [{"arch": a.to_dict(), "latency_ms": 1.0 + a.decoder_layers, "device": {"device": "cpu"}} for a in archs]
    write_dataset(tmp_path / "lat.csv", space, samples, "fp32")
    data = read_dataset(tmp_path / "lat.csv")
    assert data["source"] == "mosnas" and data["features"] == feature_names(space) and data["rows"] == len(archs)
    assert data["x"][0].tolist() == raw_features(space, archs[0]) and data["y"][0] == samples[0]["latency_ms"]
    pred, report = fit_dataset(tmp_path / "lat.csv", models=("linear",))
    assert report["predictors"]["linear"]["mape_pct"] < 1.0  # latency = 1 + decoder layers: linear exactly


def test_bad_datasets_are_refused_with_their_line(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_dataset(tmp_path / "none.csv")
    (tmp_path / "h.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="header"):
        read_dataset(tmp_path / "h.csv")
    with gzip.open(XEON, "rt") as f:
        lines = f.read().splitlines()[:4]
    lines[3] = lines[3].replace(",", ",x", 1)
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"bad.csv:4: a feature or latency"):
        read_dataset(tmp_path / "bad.csv")


@pytest.mark.slow
def test_cli_fits_hat_data_and_writes_a_predictor(tmp_path, capsys):
    out = tmp_path / "pred"
    assert main(["latency", "--fit", str(HAT / "wmt14ende_cpu_raspberrypi_all.csv.gz"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "linear" in text and "mlp" in text and "chosen:" in text
    assert sorted(FeaturePredictor.load(out).names) == sorted(feature_names(load_space(HAT_SPACE)))  # HAT order
    assert main(["latency", "--fit", str(XEON)]) == 2  # --out is required: one line, no files
    assert not Path(tmp_path / "x").exists()
