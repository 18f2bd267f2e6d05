"""Bad input, clear error, nothing lost: each case gets one line on stderr and a non-zero exit."""

import json
import os
import re
from pathlib import Path

import pytest

from mosnas.cli.main import main
from mosnas.engine.checkpoint import list_checkpoints
from mosnas.engine.load import load_run
from tests.conftest import DATA, ROOT, TINY_SPACE


@pytest.fixture
def trained(tiny_run_dir):
    return tiny_run_dir


@pytest.fixture
def corpus(tmp_path):
    """Write a small corpus folder: corpus({'train.en': '...'})."""

    def make(files: dict[str, str | bytes]) -> Path:
        d = tmp_path / "corpus"
        d.mkdir(exist_ok=True)
        for name, text in files.items():
            (d / name).write_bytes(text if isinstance(text, bytes) else text.encode())
        return d

    return make


def run_cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args] + ["--quiet"])  # no progress bars: stderr holds only the error
    err = capsys.readouterr().err.strip()
    return code, err


def expect_error(capsys, fragment, *args):
    code, err = run_cli(capsys, *args)
    assert code != 0, f"exit 0 for {args}"
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mosnas: error: ") and re.search(fragment, lines[0]), lines[0]


def yaml_file(tmp_path, text):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    return p


TRAIN = ["train", "configs/tiny.yaml"]
CONFIG_CASES = [
    ("missing config", ["train", "nope.yaml"], "config file not found: nope.yaml"),
    ("unknown key", TRAIN + ["train.speed=3"], r"unknown config key in section 'train': train\.speed"),
    ("unknown section", TRAIN + ["optimizer.lr=1"], "unknown config key: optimizer"),
    ("wrong int", TRAIN + ["train.max_steps=ten"], "train.max_steps: expected int .*, got 'ten'"),
    (
        "fractional int",
        TRAIN + ["train.max_steps=2.5"],
        "train.max_steps: expected int .*, got 2.5",
    ),
    ("wrong float", TRAIN + ["train.lr=fast"], "train.lr: expected float"),
    ("wrong bool", TRAIN + ["train.bf16=perhaps"], "train.bf16: expected bool"),
    ("unknown generator", TRAIN + ["supernet.generator=moe"], "supernet.generator: unknown value 'moe'"),
    ("unknown expert init", TRAIN + ["supernet.expert_init=zeros"], "supernet.expert_init: unknown value 'zeros'"),
    ("unknown sampling", TRAIN + ["train.sampling=all"], "train.sampling: unknown value 'all'"),
    ("pretrained-first without file", TRAIN + ["supernet.expert_init=pretrained-first"], "needs supernet.pretrained"),
    (
        "pretrained file missing",
        TRAIN + ["supernet.pretrained=none.safetensors", "supernet.expert_init=copy"],
        "supernet.pretrained: file not found",
    ),
    (
        "pretrained weights redrawn",
        TRAIN + ["supernet.pretrained=none.safetensors"],  # expert_init defaults to independent
        "supernet.expert_init=independent would redraw .* use supernet.expert_init=copy or pretrained-first",
    ),
    ("one beta", TRAIN + ["train.betas=0.9"], r"train.betas: expected 2 values, got 1 \(0.9\)"),
    ("negative beam", TRAIN + ["decode.beam=-1"], "decode.beam must be > 0, got -1"),
    ("never logs", TRAIN + ["train.log_every=0"], "train.log_every must be > 0, got 0"),
    ("nan learning rate", TRAIN + ["train.lr=nan"], "train.lr must be a finite number, got nan"),
    ("Norwegian is text", TRAIN + ["data.tgt_lang=no", "supernet.generator=no"], "unknown value 'no'"),
    ("zero experts", TRAIN + ["supernet.num_experts=0"], "supernet.num_experts must be > 0"),
    ("distill out of range", TRAIN + ["train.distill=2"], r"train.distill must be in \[0, 1\]"),
    ("override without =", TRAIN + ["--force", "train.lr"], "not of the form key=value"),
    ("missing space file", TRAIN + ["supernet.space=spaces/none.yaml"], "search-space file not found"),
    (
        "fixed arch file missing",
        TRAIN + ["train.sampling=fixed", "train.fixed_arch=/no/arch.json"],
        "arch file not found",
    ),
    ("fixed arch not a string", TRAIN + ["train.fixed_arch={a: 1}"], "train.fixed_arch: expected str"),
    (
        "missing data dir",
        TRAIN + ["--data", "/nonexistent/corpus"],
        "data directory not found: looked in /nonexistent/corpus",
    ),
]


@pytest.mark.parametrize("name, args, fragment", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_config_errors(capsys, tmp_path, name, args, fragment):
    expect_error(capsys, fragment, *args, f"out_dir={tmp_path}")
    assert not (tmp_path / "tiny" / "checkpoints").exists()


# Values refused when the config is built: before the run folder, the tokenizer or anything else is written.
VALUE_CASES = [c for c in CONFIG_CASES if c[0] in ("one beta", "negative beam", "never logs", "nan learning rate")]
VALUE_CASES += [c for c in CONFIG_CASES if c[0] in ("pretrained weights redrawn", "wrong int", "zero experts")]


@pytest.mark.parametrize("name, args, fragment", VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_bad_values_write_nothing(capsys, tmp_path, name, args, fragment):
    expect_error(capsys, fragment, *args, f"out_dir={tmp_path}", f"data.dir={DATA}")
    assert not list(tmp_path.iterdir())


PATH_CASES = [
    ("no data folder", ["--data", "/nonexistent/corpus"], r"data directory not found: looked in /nonexistent/corpus"),
    ("missing space", ["supernet.space=nope/space.yaml"], "nope/space.yaml"),
    ("missing pretrained", ["supernet.pretrained=nope.safetensors", "supernet.expert_init=copy"], "nope.safetensors"),
    ("missing fixed arch", ["train.sampling=fixed", "train.fixed_arch=nope.json"], "nope.json"),
    ("missing tokenizer", ["data.tokenizer=nope.model"], r"data.tokenizer: file not found: /.*/nope\.model"),
    ("missing valid split", ["data.valid=nope"], r"missing corpus file .*nope\.en"),
]


@pytest.mark.parametrize("name, args, fragment", PATH_CASES, ids=[c[0] for c in PATH_CASES])
def test_wrong_paths_leave_no_run_folder(capsys, tmp_path, name, args, fragment):
    # checked before the run folder is made, so the corrected command is not refused as "a different run"
    expect_error(capsys, fragment, *TRAIN, f"out_dir={tmp_path}", f"data.dir={DATA}", *args)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("train: [1, 2\n", r"malformed YAML in .*bad.yaml \(line \d+, column \d+\)"),
        ("- just\n- a list\n", "expected a mapping at the top level, got list"),
        ("train: 5\n", "train: expected a section"),
    ],
)
def test_malformed_yaml(capsys, tmp_path, text, fragment):
    expect_error(capsys, fragment, "train", yaml_file(tmp_path, text), f"out_dir={tmp_path}")


def test_bad_space_files(capsys, tmp_path):
    bad = tmp_path / "space.yaml"
    bad.write_text(Path(TINY_SPACE).read_text() + "extra_dim: [1]\n")
    expect_error(capsys, "unknown key.*extra_dim", *TRAIN, f"supernet.space={bad}", f"out_dir={tmp_path}")
    bad.write_text(Path(TINY_SPACE).read_text().replace("encoder_heads: [2, 4]", "encoder_heads: [3]"))
    expect_error(
        capsys,
        r"qkv_dim 32 is not divisible by encoder_heads \[3\]",
        *TRAIN,
        f"supernet.space={bad}",
        f"out_dir={tmp_path}",
    )


@pytest.mark.parametrize(
    "files, fragment",
    [
        (
            {"train.en": "a\nb\nc\n", "train.de": "a\nb\n", "val.en": "a\n", "val.de": "a\n"},
            "parallel files differ in length: .*train.en has 3 lines, .*train.de has 2",
        ),
        (
            {"train.en": b"ok\n\xc3\x28 broken\n", "train.de": "a\nb\n", "val.en": "a\n", "val.de": "a\n"},
            r"train.en: invalid UTF-8 on line 2",
        ),
        ({"train.en": "", "train.de": "", "val.en": "a\n", "val.de": "a\n"}, "corpus split 'train' is empty"),
        (
            {"train.en": "\n\n", "train.de": "x\n\n", "val.en": "a\n", "val.de": "a\n"},
            "no usable sentence pairs in split 'train'",
        ),
        ({"train.en": "a\n", "train.de": "a\n"}, r"missing corpus file .*val.en\[\.gz\]"),
        (
            {"train.en.gz": b"not gzip at all", "train.de": "a\n", "val.en": "a\n", "val.de": "a\n"},
            "cannot read .*train.en.gz",
        ),
    ],
)
def test_corpus_errors(capsys, tmp_path, corpus, files, fragment):
    d = corpus(files)  # the split a run scores is checked too (data.test): these corpora score on val
    expect_error(capsys, fragment, *TRAIN, "--data", d, f"out_dir={tmp_path}", "data.test=val")


def test_export_errors(capsys, tmp_path, trained):
    expect_error(capsys, "is not a mosnas run folder", "export", tmp_path, "--arch", "largest")
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"encoder_embed_dim": 16}))
    expect_error(capsys, "bad arch fields: missing", "export", trained, "--arch", arch)
    arch.write_text("{oops")
    expect_error(capsys, "arch is not valid JSON", "export", trained, "--arch", arch)
    expect_error(capsys, "arch file not found", "export", trained, "--arch", tmp_path / "none.json")
    from mosnas.mt.space import load_space

    big = load_space(TINY_SPACE).largest().to_dict()
    arch.write_text(json.dumps({**big, "encoder_embed_dim": 48}))
    expect_error(
        capsys,
        r"encoder_embed_dim = 48 is outside space 'tiny' \(allowed: 16, 24, 32\)",
        "export",
        trained,
        "--arch",
        arch,
    )
    assert (trained / "checkpoints").is_dir() and list_checkpoints(trained)  # nothing lost


def test_foreign_and_truncated_checkpoints(capsys, tmp_path, trained):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    space = copy / "space.yaml"
    space.write_text(space.read_text().replace("name: tiny", "name: other"))
    expect_error(capsys, "trained on another search space", "export", copy, "--arch", "largest")
    space.write_text((trained / "space.yaml").read_text())
    model = list_checkpoints(copy)[-1] / "model.safetensors"
    model.write_bytes(model.read_bytes()[:1000])
    expect_error(capsys, "truncated or corrupted", "export", copy, "--arch", "largest")
    state = list_checkpoints(copy)[-1] / "state.json"
    state.write_text('{"format": "something-else"}')
    expect_error(capsys, "is not a mosnas checkpoint", "export", copy, "--arch", "largest")


def test_run_folder_protection(capsys, trained):
    out, name = trained.parent, trained.name
    args = [
        *TRAIN,
        f"out_dir={out}",
        f"name={name}",
        f"data.dir={DATA}",
        f"supernet.space={TINY_SPACE}",
        "train.max_steps=2",
    ]
    expect_error(capsys, "already holds a trained run; pass --resume", *args)
    expect_error(capsys, r"holds a different run \(changed: train.lr\)", *args, "train.lr=0.5")
    assert list_checkpoints(trained)  # refused runs did not touch it


def test_foreign_folder_and_unwritable_output(capsys, tmp_path):
    other = tmp_path / "tiny"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    expect_error(capsys, "exists and is not a mosnas run", *TRAIN, f"out_dir={tmp_path}")
    assert (other / "notes.txt").read_text() == "mine"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    expect_error(capsys, "cannot write to run directory", *TRAIN, f"out_dir={blocker}")


def test_model_and_translation_errors(capsys, tmp_path, trained):
    expect_error(capsys, "is not an exported model folder", "evaluate", tmp_path)
    assert main(["export", str(trained), "--arch", "smallest", "--out", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    expect_error(capsys, "missing corpus file", "evaluate", tmp_path / "m", "--data", DATA, "--split", "nosplit")
    expect_error(capsys, "cannot read .*none.txt", "translate", tmp_path / "m", "--input", tmp_path / "none.txt")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "encoder_embed_dim": 24, "decoder_embed_dim": 24}))
    expect_error(capsys, "does not match its config.json", "translate", tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "position_dim": 8}))
    expect_error(capsys, "config.json is not a valid model config", "translate", tmp_path / "m")


def test_non_finite_loss_stops_with_message(capsys, tmp_path):
    args = [
        *TRAIN,
        f"out_dir={tmp_path}",
        "train.lr=1e12",
        "train.warmup=0",
        "train.clip_norm=0",
        "train.max_steps=50",
        "train.ckpt_every=1",
        "train.precision=fp32",
    ]
    expect_error(capsys, "non-finite loss at step .* the last checkpoint is kept", *args)
    assert list_checkpoints(tmp_path / "tiny")
    assert load_run(tmp_path / "tiny").step >= 1  # the kept checkpoint loads


def test_disk_full_is_one_line(capsys, tmp_path, trained):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    assert main(["export", str(trained), "--arch", "smallest", "--out", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    # Point the hypothesis file at /dev/full: every write fails with ENOSPC, as on a full disk.
    (tmp_path / "m" / "hyp.val.de").symlink_to("/dev/full")
    expect_error(
        capsys,
        "No space left on device",
        "evaluate",
        tmp_path / "m",
        "--data",
        DATA,
        "--split",
        "val",
        "--limit",
        "2",
        "--beam",
        "1",
    )


def test_nothing_is_unpickled():
    """Loading uses safetensors / JSON only: no torch.load or pickle anywhere in the package."""
    sources = "\n".join(p.read_text() for p in (ROOT / "mosnas").rglob("*.py"))
    assert not re.search(r"torch\.load\(|import pickle|pickle\.load|from pickle", sources)


def test_a_missing_test_split_is_refused_before_training(capsys, tmp_path, corpus):
    d = corpus({"train.en": "a\nb\n", "train.de": "a\nb\n", "val.en": "a\n", "val.de": "a\n"})
    missing = r"missing corpus file .*test_2016_flickr.en\[\.gz\]"
    expect_error(capsys, missing, *TRAIN, "--data", d, f"out_dir={tmp_path}")
    assert not any(tmp_path.glob("*/checkpoints"))  # nothing trained for a run that could not be scored


def _damage(kind: str, folder: Path) -> None:
    """Damage one file of an exported model folder the way disks and hands do."""
    weights = folder / "model.safetensors"
    if kind == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:200])
    elif kind == "weights with a damaged header":
        data = bytearray(weights.read_bytes())
        data[8:40] = b"\xff" * 32
        weights.write_bytes(bytes(data))
    elif kind == "weights that are not safetensors":
        weights.write_text("hello")
    elif kind == "foreign subword model":
        (folder / "spm.model").write_bytes(b"\x00not a sentencepiece model" * 10)
    elif kind == "export.json not JSON":
        (folder / "export.json").write_text("{oops")
    elif kind == "arch.json not JSON":
        (folder / "arch.json").write_text("[1, 2")


DAMAGES = [
    ("truncated weights", "model.safetensors is not a readable safetensors file"),
    ("weights with a damaged header", "model.safetensors is not a readable safetensors file"),
    ("weights that are not safetensors", "model.safetensors is not a readable safetensors file"),
    ("foreign subword model", "spm.model is not a readable sentencepiece model"),
    ("export.json not JSON", r"export\.json is not valid JSON \(line 1"),
    ("arch.json not JSON", r"arch\.json.* is not valid JSON"),
]
READS = {"arch.json not JSON": {"finetune"}}  # translate and evaluate never read arch.json


@pytest.fixture(scope="module")
def exported(tiny_run_dir, tmp_path_factory):
    """The tiny run's smallest subnet exported once; each case damages a copy of it."""
    out = tmp_path_factory.mktemp("export") / "smallest"
    assert main(["export", str(tiny_run_dir), "--arch", "smallest", "--out", str(out)]) == 0
    return out


CASES = [(c, k, f) for k, f in DAMAGES for c in ("translate", "evaluate", "finetune") if c in READS.get(k, {c})]


@pytest.mark.parametrize("command, kind, fragment", CASES, ids=[f"{c}-{k}" for c, k, _ in CASES])
def test_a_damaged_model_file_is_one_line_for_every_command(
    capsys, tmp_path, exported, tiny_run_dir, command, kind, fragment
):
    """Every command that reads a model folder: one line naming the file and what is wrong, exit 2, nothing
    written (kind 4 of issue 33: damaged, truncated or foreign files)."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(exported, model)
    capsys.readouterr()
    _damage(kind, model)
    before = sorted(p.name for p in model.iterdir())
    extra = {"translate": ["--input", DATA / "val.en.gz"], "evaluate": ["--limit", 4], "finetune": ["--steps", 1]}
    args = [command, model, *extra[command]]
    name = "damaged-" + kind.replace(" ", "-").replace(".", "")
    if command == "finetune":
        args += ["--run", tiny_run_dir, "--name", name]
    code, err = run_cli(capsys, *args)
    assert code == 2 and len(err.splitlines()) == 1 and re.search(fragment, err), (code, err)
    assert sorted(p.name for p in model.iterdir()) == before
    assert not list((tiny_run_dir / "finetune").glob(f"{name}*"))  # no run folder, no record of one
