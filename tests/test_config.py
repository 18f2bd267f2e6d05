import dataclasses
import re
import typing

import pytest
import yaml

from mosnas.config import load_config, parse_overrides
from mosnas.errors import ConfigError
from tests.conftest import ROOT


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_yaml_values_are_converted_by_declared_type(tmp_path):
    # PyYAML reads 1e-3 as a string and `off` as False: both must land as the field's type.
    cfg = load_config(write(tmp_path, "train:\n  lr: 1e-3\n  bf16: off\n  max_steps: '20'\n  betas: [0.9, 0.99]\n"))
    assert cfg.train.lr == pytest.approx(1e-3) and isinstance(cfg.train.lr, float)
    assert cfg.train.precision == "fp32"  # legacy key train.bf16 maps to precision
    assert cfg.train.max_steps == 20
    assert cfg.train.betas == (0.9, 0.99)


def test_overrides_win_over_the_file(tmp_path):
    cfg = load_config(write(tmp_path, "train:\n  lr: 0.1\n"), ["train.lr=3e-4", "supernet.generator=layer"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.supernet.generator == "layer"
    assert parse_overrides(["a.b.c=1"]) == {"a": {"b": {"c": "1"}}}  # text; the declared type converts it


@pytest.mark.parametrize(
    "text, message",
    [
        ("train:\n  lrr: 1\n", "unknown config key in section 'train': train.lrr"),
        ("bogus: 1\n", "unknown config key: bogus"),
        ("train: [1, 2\n", "malformed YAML"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("train:\n  max_steps: 1.5\n", "train.max_steps: expected int .*, got 1.5"),
        ("train:\n  lr: fast\n", "train.lr: expected float .*, got 'fast'"),
        ("train:\n  bf16: maybe\n", "train.bf16: expected bool"),
        ("supernet:\n  generator: moe\n", "supernet.generator: unknown value 'moe'"),
        ("supernet:\n  expert_init: pretrained-first\n", "needs supernet.pretrained"),
        ("train:\n  max_steps: 0\n", "train.max_steps must be > 0"),
        ("train: 3\n", "train: expected a section"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(write(tmp_path, text))


def test_missing_file_and_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(None, ["train.lr"])


def test_config_round_trips_through_its_dict(tmp_path):
    from mosnas.config import config_from_dict

    cfg = load_config(write(tmp_path, "train:\n  lr: 2e-3\n"))
    assert config_from_dict(cfg.to_dict()) == cfg


def test_configs_and_run_folders_before_the_family_key_are_translation(tmp_path):
    """`family` arrived with the family split: a config or saved run without it is an mt run."""
    from mosnas.config import config_from_dict

    assert load_config(write(tmp_path, "train:\n  lr: 2e-3\n")).family == "mt"
    assert config_from_dict({"name": "old"}).family == "mt"
    with pytest.raises(ConfigError, match="family: unknown value 'gpt'; expected one of mt, bert"):
        config_from_dict({"family": "gpt"})


# -- YAML keeps the user's text: `no` is Norwegian, not False; `007` is a name, not 7 -----------------------------

# Plain scalars that YAML 1.1 (PyYAML) would turn into a bool, a number, a date, None or a sexagesimal int.
TRICKY_TEXT = ["no", "off", "on", "yes", "y", "n", "True", "1e3", "007", "0x1F", "1_000", "12:30", "null", "~"]
TRICKY_TEXT += [".inf", ".nan", "2026-11-30", "1.50", "+1", "0o17"]


def _fields():
    """(dotted key, field, declared type) of every setting, top level and every section."""
    from mosnas.config import Config

    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        if dataclasses.is_dataclass(hints[f.name]):
            sub = typing.get_type_hints(hints[f.name])
            yield from ((f"{f.name}.{g.name}", g, sub[g.name]) for g in dataclasses.fields(hints[f.name]))
        else:
            yield f.name, f, hints[f.name]


def _free_text_keys():
    """Text settings that take any text (names, languages, splits): no choices or pattern declared. Paths are
    made absolute when a config is built (mosnas.workspace.paths; tests/test_paths.py)."""
    from mosnas.workspace.paths import PATH_SETTINGS

    paths = {f"{section}.{key}" for section, key in PATH_SETTINGS}
    for key, f, typ in _fields():
        if typ in (str, tuple[str, ...]) and not ({"choices", "pattern"} & set(f.metadata)) and key not in paths:
            yield key, typ


def _as_yaml_file(tmp_path, key: str, text: str):
    section, _, leaf = key.rpartition(".")
    return write(tmp_path, f"{section}:\n  {leaf}: {text}\n" if section else f"{leaf}: {text}\n")


@pytest.mark.parametrize("text", TRICKY_TEXT)
def test_text_settings_keep_exactly_what_was_written(tmp_path, text):
    keys = list(_free_text_keys())
    assert len(keys) >= 10 and ("data.tgt_lang", str) in keys
    for key, typ in keys:
        value = f"[{text}]" if typ is not str else text
        expected = (text,) if typ is not str else text
        section, _, leaf = key.rpartition(".")
        from_override = load_config(None, ["supernet.expert_init=copy", f"{key}={value}"])
        from_file = load_config(_as_yaml_file(tmp_path, key, value), ["supernet.expert_init=copy"])
        for cfg in (from_override, from_file):
            got = getattr(getattr(cfg, section) if section else cfg, leaf)
            assert got == expected, f"{key}: {value!r} became {got!r}"


@pytest.mark.parametrize("text", ["no", "off", "1e3", "null", "~", "2026-11-30"])
def test_settings_with_choices_name_the_text_as_written(tmp_path, text):
    with pytest.raises(ConfigError, match=f"supernet.generator: unknown value '{re.escape(text)}'"):
        load_config(None, [f"supernet.generator={text}"])
    with pytest.raises(ConfigError, match=f"train.precision: unknown value '{re.escape(text)}'"):
        load_config(write(tmp_path, f"train:\n  precision: {text}\n"))


@pytest.mark.parametrize(
    "key, text, expected",
    [
        ("train.lr", "1e-3", 1e-3),
        ("train.lr", "3E-4", 3e-4),
        ("train.max_steps", "1e3", 1000),
        ("train.max_steps", "007", 7),
        ("train.max_steps", "1_000", 1000),
        ("train.max_steps", "'20'", 20),
        ("train.tensorboard", "off", False),
        ("train.tensorboard", "yes", True),
        ("train.tensorboard", "y", True),
        ("supernet.mos_attention", "on", True),
        ("supernet.share_embeddings", "No", False),
        ("train.betas", "[0.9, 0.999]", (0.9, 0.999)),
        ("search.latency_ms", "[5, 2.5e1]", (5.0, 25.0)),
        ("search.latency_ms", "[]", ()),
    ],
)
def test_numbers_and_bools_still_convert_by_declared_type(tmp_path, key, text, expected):
    section, leaf = key.split(".")
    for cfg in (load_config(None, [f"{key}={text}"]), load_config(write(tmp_path, f"{section}:\n  {leaf}: {text}\n"))):
        got = getattr(getattr(cfg, section), leaf)
        assert got == expected and type(got) is type(expected), (text, got)


@pytest.mark.parametrize(
    "key, text",
    [
        ("train.max_steps", "12:30"),  # YAML 1.1 reads 750 (base 60)
        ("train.max_steps", "0x1F"),  # YAML 1.1 reads 31
        ("train.lr", ".inf"),
        ("train.lr", "null"),
        ("train.tensorboard", "~"),
        ("train.tensorboard", "2026-11-30"),
        ("data.vocab_size", "2026-11-30"),
    ],
)
def test_yaml_spellings_of_other_types_are_refused(tmp_path, key, text):
    section, leaf = key.split(".")
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(None, [f"{key}={text}"])
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(write(tmp_path, f"{section}:\n  {leaf}: {text}\n"))


def test_saved_config_round_trips_to_an_equal_config(tmp_path):
    from mosnas.config import config_from_dict

    cfg = load_config(
        ROOT / "configs" / "tiny.yaml",
        ["name=007", "data.tgt_lang=no", "eval.split=null", "eval.archs=[largest, '1e3']", "train.lr=1e-5"]
        + ["train.betas=[0.8, 0.999]", "search.latency_ms=[12.5]", "train.precision=fp32", "supernet.dropout=0"],
    )
    assert (cfg.name, cfg.data.tgt_lang, cfg.eval.split, cfg.eval.archs) == ("007", "no", "null", ("largest", "1e3"))
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))  # as train.prepare_run_dir saves it
    assert config_from_dict(yaml.safe_load(saved.read_text())) == cfg  # as train.load_run re-reads it
    assert load_config(saved) == cfg  # a saved config given back as CONFIG
    bundled = sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "configs" / "studies").glob("*_run.yaml"))
    for path in bundled:  # every bundled run config (a study's frozen base too)
        cfg = load_config(path)
        assert config_from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg, path


def test_text_values_a_python_caller_passes_are_not_rewritten():
    from mosnas.config import config_from_dict

    with pytest.raises(ConfigError, match="data.tgt_lang: expected text, got False"):
        config_from_dict({"data": {"tgt_lang": False}})


def test_space_files_load_and_keep_their_text(tmp_path):
    from mosnas.bert.space import load_space as load_bert_space
    from mosnas.mt.space import load_space, space_from_dict

    for path in sorted((ROOT / "configs" / "spaces").glob("*.yaml")):
        if path.name.startswith("bert_"):  # the BERT family's spaces (layers, hidden, heads, ffn)
            bert_space = load_bert_space(path)
            assert all(isinstance(v, int) for v in bert_space.hidden)
            saved = yaml.safe_load(yaml.safe_dump(bert_space.to_dict()))
            assert type(bert_space).from_dict(saved, bert_space.schema, "saved") == bert_space
            continue
        if path.name.startswith("nasbert_"):  # NAS-BERT's spaces (sublayers, blocks, op widths and kernels)
            from mosnas.bert.nasbert.space import NasBertSpace
            from mosnas.bert.nasbert.space import load_space as load_nasbert_space

            nb = load_nasbert_space(path)
            assert isinstance(nb.width, int) and all(isinstance(v, int) for v in nb.hidden_sizes)
            assert NasBertSpace.from_dict(yaml.safe_load(yaml.safe_dump(nb.to_dict())), "saved") == nb
            continue
        space = load_space(path)
        assert all(isinstance(v, int) for v in space.encoder_embed_dim) and isinstance(space.qkv_dim, int)
        assert space_from_dict(yaml.safe_load(yaml.safe_dump(space.to_dict())), "saved") == space  # run/space.yaml
    p = tmp_path / "s.yaml"
    p.write_text((ROOT / "configs" / "spaces" / "tiny.yaml").read_text().replace("name: tiny", "name: no"))
    assert load_space(p).name == "no"
    p.write_text((ROOT / "configs" / "spaces" / "tiny.yaml").read_text().replace("qkv_dim: 32", "qkv_dim: 0x20"))
    with pytest.raises(ConfigError, match="qkv_dim must be a positive integer"):
        load_space(p)


# -- every numeric setting declares its valid range and arity; one validator checks them at load time ---------------


def _numeric(typ) -> bool:
    item = typing.get_args(typ)[0] if typing.get_origin(typ) is tuple else typ
    return item in (int, float)


def test_every_numeric_setting_declares_its_range():
    numeric = [(key, f) for key, f, typ in _fields() if _numeric(typ)]
    assert len(numeric) > 60  # every section is walked
    missing = [key for key, f in numeric if "bounds" not in f.metadata]
    assert not missing, f"numeric settings without a declared range: {missing}"


def _bad_values(f, typ) -> list[str]:
    """Texts outside the declared range of field `f`: past each bound, non-finite, non-integral, wrong arity."""
    b = f.metadata["bounds"]
    is_tuple = typing.get_origin(typ) is tuple
    item = typing.get_args(typ)[0] if is_tuple else typ
    step = 1 if item is int else 0.5
    bad = [str(b.gt)] if b.gt is not None else []
    bad += [str(b.ge - step)] if b.ge is not None else []
    bad += [str(b.lt)] if b.lt is not None else []
    bad += [str(b.le + step)] if b.le is not None else []
    bad += ["nan", "inf", "-inf", "abc"] + (["1.5"] if item is int else [])
    if is_tuple:
        good = str(b.gt + 0.5 if b.gt is not None else b.ge if b.ge is not None else 0)
        bad = [f"[{v}]" if b.length in (None, 1) else f"[{', '.join([v] * b.length)}]" for v in bad]
        if b.length:
            bad += [f"[{', '.join([good] * (b.length - 1))}]", f"[{', '.join([good] * (b.length + 1))}]"]
    return bad


NUMERIC = [(key, f, typ) for key, f, typ in _fields() if _numeric(typ) and "bounds" in f.metadata]


@pytest.mark.parametrize("key, f, typ", NUMERIC, ids=[k for k, _, _ in NUMERIC])
def test_values_outside_the_declared_range_are_refused(tmp_path, key, f, typ):
    for text in _bad_values(f, typ):
        with pytest.raises(ConfigError, match=re.escape(key)):
            load_config(None, [f"{key}={text}"])
            pytest.fail(f"{key}={text} was accepted")


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.betas=0.9", r"train.betas: expected 2 values, got 1"),
        ("train.betas=[0.9, 1]", r"train.betas entries must be in \[0, 1\), got 1"),
        ("train.lr=nan", "train.lr must be a finite number, got nan"),
        ("train.log_every=0", "train.log_every must be > 0, got 0"),
        ("supernet.attention_dropout=1", r"supernet.attention_dropout must be in \[0, 1\), got 1"),
        ("decode.beam=-2", "decode.beam must be > 0, got -2"),
        ("search.latency_fractions=[0.5, 1.5]", r"search.latency_fractions entries must be in \(0, 1\], got 1.5"),
        ("train.seed=-1", "train.seed must be in"),
        ("search.parents=200", "search.parents=200 must be <= search.population=125"),
        ("latency.holdout=0.001", "latency.holdout=0.001 holds out 0 of latency.num_samples=200"),
    ],
)
def test_range_errors_name_value_and_expectation(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_values_on_the_edge_of_the_range_are_accepted():
    cfg = load_config(
        None,
        ["train.max_minutes=0", "train.clip_norm=0", "train.distill=1", "supernet.dropout=0", "data.train_limit=0"]
        + ["train.betas=[0, 0.999]", "search.mutation_prob=1", "search.latency_fractions=[1]", "decode.lenpen=0"],
    )
    assert cfg.train.distill == 1.0 and cfg.search.latency_fractions == (1.0,)


def test_pretrained_weights_with_independent_experts_are_refused():
    with pytest.raises(ConfigError, match="use supernet.expert_init=copy or pretrained-first"):
        load_config(None, ["supernet.pretrained=dense.safetensors", "supernet.expert_init=independent"])
    for init in ("copy", "pretrained-first"):  # these keep the pretrained weights
        assert load_config(None, ["supernet.pretrained=dense.safetensors", f"supernet.expert_init={init}"])


def test_bleu_tokenizers_are_sacrebleus():
    from sacrebleu.metrics import BLEU

    from mosnas.config import BLEU_TOKENIZERS

    assert BLEU_TOKENIZERS == ("", *BLEU.TOKENIZERS)
    with pytest.raises(ConfigError, match="eval.bleu_tokenize: unknown value '14a'; expected one of '', none, zh"):
        load_config(None, ["eval.bleu_tokenize=14a"])
    with pytest.raises(ConfigError, match="latency.device: unknown value 'gpu'; expected cpu, cuda, cuda:N or auto"):
        load_config(None, ["latency.device=gpu"])
    assert load_config(None, ["latency.device=cuda:1"]).latency.device == "cuda:1"  # checked when timing
