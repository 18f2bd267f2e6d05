import pytest

from mosnas.config import load_config, parse_overrides
from mosnas.errors import ConfigError


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
    assert parse_overrides(["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


@pytest.mark.parametrize(
    "text, message",
    [
        ("train:\n  lrr: 1\n", "unknown config key in section 'train': train.lrr"),
        ("bogus: 1\n", "unknown config key: bogus"),
        ("train: [1, 2\n", "malformed YAML"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("train:\n  max_steps: 1.5\n", "train.max_steps: expected int, got 1.5"),
        ("train:\n  lr: fast\n", "train.lr: expected float, got 'fast'"),
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
