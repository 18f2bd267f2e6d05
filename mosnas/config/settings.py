"""Typed settings: declared ranges and choices, conversion of the text a user wrote to the declared type,
YAML without implicit typing, dotted overrides, and building frozen dataclasses from nested dicts."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mosnas.errors import ConfigError


@dataclass(frozen=True)
class Bounds:
    """The valid values of a numeric setting: finite, within the bounds given (gt/ge/lt/le), and for a
    list, `length` entries when given. Declared next to each field; `Config.validate` checks them all."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    length: int | None = None

    def describe(self) -> str:
        """The valid range as a user reads it: '> 0', '>= 10', 'in [0, 1)'."""
        lo = (self.gt, "(", ">") if self.gt is not None else (self.ge, "[", ">=") if self.ge is not None else None
        hi = (self.lt, ")", "<") if self.lt is not None else (self.le, "]", "<=") if self.le is not None else None
        if lo and hi:
            return f"in {lo[1]}{lo[0]}, {hi[0]}{hi[1]}"
        bound = lo or hi
        return f"{bound[2]} {bound[0]}" if bound else "finite"

    def check(self, key: str, value: Any) -> None:
        if isinstance(value, tuple):
            if self.length is not None and len(value) != self.length:
                shown = ", ".join(map(str, value))
                raise ConfigError(f"{key}: expected {self.length} values, got {len(value)} ({shown})")
            for v in value:
                self._check_one(f"{key} entries", v)
        else:
            self._check_one(key, value)

    def _check_one(self, key: str, v: float) -> None:
        if not math.isfinite(v):
            raise ConfigError(f"{key} must be a finite number, got {v}")
        inside = (
            (self.gt is None or v > self.gt)
            and (self.ge is None or v >= self.ge)
            and (self.lt is None or v < self.lt)
            and (self.le is None or v <= self.le)
        )
        if not inside:
            raise ConfigError(f"{key} must be {self.describe()}, got {v}")


def num(default: Any, **bounds: Any) -> Any:
    """A numeric setting and its valid range, e.g. `num(0.1, ge=0, lt=1)` (see `Bounds`)."""
    return field(default=default, metadata={"bounds": Bounds(**bounds)})


def one_of(default: str, choices: tuple[str, ...]) -> Any:
    """A text setting that takes one of `choices`."""
    return field(default=default, metadata={"choices": choices})


SEED = {"ge": 0, "le": 2**32 - 1}  # numpy's range; torch and random take it too


def check_declared(obj: Any, prefix: str) -> None:
    """The one validator of declared constraints: `Bounds`, choices and patterns, section by section."""
    for f in dataclasses.fields(obj):
        key, value = prefix + f.name, getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_declared(value, key + ".")
        else:
            check_field(key, f, value)


def check_field(key: str, f: dataclasses.Field, value: Any) -> None:
    if "bounds" in f.metadata:
        f.metadata["bounds"].check(key, value)
    for one in value if isinstance(value, tuple) else (value,):  # a list setting: each entry is one of them
        if "choices" in f.metadata and one not in f.metadata["choices"]:
            allowed = ", ".join(repr(c) if not c else c for c in f.metadata["choices"])
            hint = did_you_mean(str(one), f.metadata["choices"])
            raise ConfigError(f"{key}: unknown value {one!r}; expected one of {allowed}{hint}")
    if "pattern" in f.metadata:
        pattern, expected = f.metadata["pattern"]
        if not re.fullmatch(pattern, value):
            raise ConfigError(f"{key}: unknown value {value!r}; expected {expected}")


def did_you_mean(word: str, options: typing.Iterable[str], prefix: str = "") -> str:
    """'; did you mean train.lr?' for the closest of `options` to a mistyped `word` ('' if none is close)."""
    close = difflib.get_close_matches(word, [o for o in options if o], n=1, cutoff=0.6)
    return f"; did you mean {prefix}{close[0]}?" if close else ""


_SCALE = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9}  # 30k, 0.5M, 1.2G: the forms reports print


def _number(text: str) -> float:
    """A number as a user writes it: '2e-4', '1,500,000', '30k', '0.5M', '1.2G' (k = 1e3, M = 1e6, G/B = 1e9).

    Raises ValueError for anything else."""
    text = text.strip().replace(",", "").replace("_", "")
    if text and text[-1] in _SCALE:
        return float(text[:-1]) * _SCALE[text[-1]]
    return float(text)


def plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


_TRUE = {"true", "yes", "y", "on", "1"}
_FALSE = {"false", "no", "n", "off", "0"}


def convert(key: str, value: Any, typ: Any) -> Any:
    """Convert a setting to its declared type. `value` is the text the user wrote (config files and
    overrides are read without YAML's implicit typing) or a typed value (a saved run config, Python)."""
    origin = typing.get_origin(typ)
    if origin is tuple:
        (item_type, *_rest) = typing.get_args(typ)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(convert(key, v, item_type) for v in value)
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, (str, int)) and str(value).strip().lower() in _TRUE | _FALSE:
                return str(value).strip().lower() in _TRUE
            raise ValueError
        if typ is int:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ValueError
            try:
                return int(value) if not isinstance(value, float) else _integral(value)
            except ValueError:
                return _integral(round(_number(value), 6))  # '1e3', '2.0', '30k', '0.5M'
        if typ is float:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ValueError
            return _number(value) if isinstance(value, str) else float(value)
        if typ is str:
            if isinstance(value, str):
                return value
            if isinstance(value, (bool, int, float)):  # a typed value: its text is lost; never guess it
                raise ConfigError(f"{key}: expected text, got {value!r}; quote it in YAML ('...')")
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        forms = {int: " (e.g. 30000, 30k, 0.5M)", float: " (e.g. 0.001, 1e-3, 2.5k)"}.get(typ, "")
        raise ConfigError(f"{key}: expected {typ.__name__}{forms}, got {_shown(value)}") from None
    raise ConfigError(f"{key}: unsupported type {typ}")


def _shown(value: Any) -> str:
    """A value for a message: numbers as written (2.5), other text quoted ('ten', '')."""
    if isinstance(value, str):
        try:
            float(value)
            return value
        except ValueError:
            pass
    return repr(value)


def _integral(x: float) -> int:
    if not x.is_integer():  # also nan and inf
        raise ValueError
    return int(x)


def build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        where = f" in section '{prefix[:-1]}'" if prefix else ""
        raise ConfigError(
            f"unknown config key{where}: {', '.join(prefix + u for u in unknown)}"
            + did_you_mean(str(unknown[0]), names, prefix)
        )
    kwargs = {}
    for name, value in raw.items():
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{name}: expected a section (mapping), got {value!r}")
            kwargs[name] = build(typ, value, f"{prefix}{name}.")
        else:
            kwargs[name] = convert(prefix + name, value, typ)
    return cls(**kwargs)


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {part} is not a section")
    node[leaf] = value


class _TextLoader(yaml.SafeLoader):
    """YAML without implicit typing: every plain scalar stays the text as written (`no` stays 'no', not False;
    `007` stays '007', not 7) and the setting's declared type converts it. Lists, mappings and merge keys work."""


_TextLoader.yaml_implicit_resolvers = {"<": yaml.SafeLoader.yaml_implicit_resolvers["<"]}  # `<<:` merge keys only


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn ['train.lr=3e-4', ...] into a nested dict; values are YAML text (lists, quotes), never typed."""
    raw: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, text = item.split("=", 1)
        try:
            value = yaml.load(text, Loader=_TextLoader)  # a SafeLoader, minus implicit typing
        except yaml.YAMLError:
            value = text
        _set_dotted(raw, key.strip(), text if value is None else value)  # '' or a comment: the text itself
    return raw


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, values as written (text, lists, mappings), with one-line errors for missing,
    malformed or non-mapping files."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_TextLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"malformed YAML in {path}{where}: {getattr(e, 'problem', e)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw
