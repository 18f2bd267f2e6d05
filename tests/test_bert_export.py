"""A BERT student collapses to a Hugging Face folder that `transformers` loads with no mosnas code, and its
hidden states equal the supernet's for that arch (shared, layer-wise and neuron-wise MoS)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mosnas import bert
from mosnas.bert.model import BertEncoder
from mosnas.bert.space import Arch
from mosnas.config import load_config
from mosnas.core.supernet import Supernet
from mosnas.engine.load import LoadedRun
from mosnas.errors import CheckpointError
from mosnas.pipeline.export import export_arch
from tests.conftest import ROOT
from tests.test_bert_model import wiki_lines

TINY = ROOT / "configs" / "spaces" / "bert_tiny.yaml"
ARCH = Arch(layers=2, hidden=24, heads=4, ffn=48)  # narrower than the space's largest in every width

# Runs in a fresh interpreter that imports transformers and torch only (asserted): what a user without mosnas has.
READER = """
import json, sys, torch, transformers
out, lines, hidden = sys.argv[1], json.loads(sys.stdin.read()), {}
for folder in sys.argv[2:]:
    tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    batch = tok(lines, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden[folder] = {"hidden": model(**batch).last_hidden_state, "batch": dict(batch),
                          "type": type(model).__name__, "params": sum(p.numel() for p in model.parameters())}
torch.save(hidden, out)
assert not any(m.startswith("mosnas") for m in sys.modules), "transformers imported mosnas"
"""


def tiny_run(tmp_path, generator: str) -> LoadedRun:
    """A tiny BERT supernet (random independent experts: MoS mixtures of distinct experts) in a run folder."""
    cfg = load_config(
        None,
        [
            "family=bert",
            f"out_dir={tmp_path}",
            f"supernet.space={TINY}",
            f"supernet.generator={generator}",
            "supernet.num_experts=3",
            "supernet.router_hidden=8",
            "bert.init=random",
        ],
    )
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()), encoding="utf-8")
    space = bert.load_space(TINY)
    _, vocab_size = bert.vocab(cfg.run_dir)
    net = Supernet(space, vocab_size, bert.supernet_config(cfg), bert).eval()
    return LoadedRun(cfg, space, net, None, 0, cfg.run_dir, {"step": 0, "model_sha256": "0" * 64})


def read_with_transformers_alone(folders: list, lines: list[str], tmp_path) -> dict:
    """{folder: its outputs on `lines`} read by a fresh interpreter with transformers and torch only."""
    out = tmp_path / "read.pt"
    subprocess.run(
        [sys.executable, "-c", READER, str(out), *map(str, folders)],
        input=json.dumps(lines),
        text=True,
        check=True,
        cwd=tmp_path,  # not the repository: nothing of mosnas on the path but what is installed
        timeout=120,
    )
    return torch.load(out)


@pytest.mark.slow
def test_exported_students_load_in_transformers_alone_with_the_supernets_hidden_states(tmp_path):
    lines = wiki_lines(3)
    runs = {g: tiny_run(tmp_path / g, g) for g in ("shared", "layer", "neuron")}
    folders = {g: export_arch(run, ARCH, tmp_path / g / "export") for g, run in runs.items()}
    read = read_with_transformers_alone(list(folders.values()), lines, tmp_path)
    for generator, run in runs.items():
        folder, hf = folders[generator], read[str(folders[generator])]
        ids, mask = hf["batch"]["input_ids"], hf["batch"]["attention_mask"]
        with torch.no_grad():
            want = run.net(ids, mask, hf["batch"]["token_type_ids"], ARCH)["hidden"]
        keep = mask.bool()
        assert hf["type"] == "BertModel"
        assert torch.allclose(hf["hidden"][keep], want[keep], atol=1e-5), generator
        record = json.loads((folder / "export.json").read_text())
        assert record["family"] == "bert" and record["generator"] == generator
        counted = bert.costs(ARCH, run.space, 30522, run.cfg.supernet, run.cfg.latency)["parameters"]
        assert record["parameters"] == hf["params"] == counted
        assert record["made_from"]["arch"] == ARCH.to_dict()
        assert json.loads((folder / "arch.json").read_text()) == ARCH.to_dict()


def test_the_folder_is_a_hugging_face_bert_and_loads_back(tmp_path):
    run = tiny_run(tmp_path, "neuron")
    folder = export_arch(run, ARCH, tmp_path / "export")
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["BertModel"] and config["model_type"] == "bert"
    assert (config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]) == (24, 2, 48)
    assert (folder / "tokenizer_config.json").is_file() and (folder / "tokenizer.json").is_file()
    model, tokenizer = bert.load_model(folder)
    assert set(load_file(str(folder / "model.safetensors"))) == set(model.state_dict())
    batch = tokenizer(wiki_lines(2), padding=True, return_tensors="pt")
    with torch.no_grad():
        want = run.net(batch["input_ids"], batch["attention_mask"], ARCH)["hidden"]
        got = model(batch["input_ids"], batch["attention_mask"])["hidden"]
    assert torch.allclose(got, want, atol=1e-5)
    fresh = bert.init_model(folder)
    assert isinstance(fresh, BertEncoder) and fresh.cfg == model.cfg
    assert not torch.equal(fresh.encoder.layer[0].output.dense.weight, model.encoder.layer[0].output.dense.weight)


def test_any_hugging_face_bert_folder_loads_as_a_student(tmp_path):
    from mosnas.bert.teacher import load_teacher, teacher_path

    model, tokenizer = bert.load_model(teacher_path(""))  # an old checkpoint: position_ids buffer, no mosnas files
    teacher = load_teacher()
    batch = tokenizer(wiki_lines(1), return_tensors="pt")
    with torch.no_grad():
        got = model(batch["input_ids"], batch["attention_mask"])["hidden"]
    assert torch.allclose(got, teacher.outputs(batch["input_ids"], batch["attention_mask"])["hidden"], atol=1e-4)
    with pytest.raises(CheckpointError, match="missing model.safetensors"):
        bert.load_model(tmp_path)


def test_training_on_from_an_export_takes_its_weights_not_the_teachers(tmp_path):
    run = tiny_run(tmp_path, "shared")
    folder = export_arch(run, ARCH, tmp_path / "export")
    cfg = bert.from_model(load_config(None, ["family=bert"]), folder)
    assert cfg.bert.init == "random"
    with pytest.raises(CheckpointError):
        bert.from_model(cfg, tmp_path / "nothing")
