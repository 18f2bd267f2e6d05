"""GLUE tasks in the standard TSV layout (`download_glue_data.py`): the task table, and tasks it does not know.

A task is a folder `DATA/<TASK>/` with `train.tsv` and `dev.tsv` (plain or `.gz`; MNLI: `dev_matched` and
`dev_mismatched`). The table below names the text and label columns and the official dev metrics of each GLUE
task (Wang et al. 2019, "GLUE", table 1). A folder the table does not know needs no code: its columns come
from an optional `glue_task.json` in the folder, e.g.

    {"text_columns": ["premise", "hypothesis"], "label_column": "label", "metrics": ["accuracy"]}

(optional keys: "labels" (their order), "regression" (bool), "header" (bool), "dev_splits"), or else from
the header: text columns are the first known pair or single column found (`sentence1`/`sentence2`,
`question1`/`question2`, `question`/`sentence`, `#1 String`/`#2 String`, `premise`/`hypothesis`,
`sentence`, `text`), the label column the first of `label`, `gold_label`, `score`, `is_duplicate`,
`Quality`. Labels are the training split's values (sorted, numerically when they are integers); a task
whose labels are all numbers with at least one written with a decimal point or exponent ("5.000") is a
regression. The metric is accuracy for classification, Pearson and Spearman for regression.

TSVs are read with `csv.QUOTE_NONE`: GLUE text holds unbalanced `"` that default quoting would swallow,
merging rows. The UTF-8 BOM of MRPC's header is dropped."""

from __future__ import annotations

import csv
import gzip
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mosnas.errors import ConfigError, DataError
from mosnas.workspace.files import UNREADABLE, reason

Column = str | int  # a header name, or a 0-based position in a file without header (CoLA)


@dataclass(frozen=True)
class TaskSpec:
    """How to read one task: its columns, label order (None: from the training split), official metrics."""

    text_columns: tuple[Column, ...]
    label_column: Column
    labels: tuple[str, ...] | None = None
    metrics: tuple[str, ...] = ("accuracy",)
    regression: bool = False
    header: bool = True
    dev_splits: tuple[str, ...] = ("dev",)


TASKS: dict[str, TaskSpec] = {
    # CoLA's TSVs have no header: source, label, original annotation, sentence
    "CoLA": TaskSpec((3,), 1, ("0", "1"), ("mcc",), header=False),
    "SST-2": TaskSpec(("sentence",), "label", ("0", "1")),
    "MRPC": TaskSpec(("#1 String", "#2 String"), "Quality", ("0", "1"), ("f1", "accuracy")),
    "STS-B": TaskSpec(("sentence1", "sentence2"), "score", None, ("pearson", "spearman"), regression=True),
    "QQP": TaskSpec(("question1", "question2"), "is_duplicate", ("0", "1"), ("f1", "accuracy")),
    "MNLI": TaskSpec(
        ("sentence1", "sentence2"),
        "gold_label",
        ("contradiction", "entailment", "neutral"),
        dev_splits=("dev_matched", "dev_mismatched"),
    ),
    "QNLI": TaskSpec(("question", "sentence"), "label", ("entailment", "not_entailment")),
    "RTE": TaskSpec(("sentence1", "sentence2"), "label", ("entailment", "not_entailment")),
    "WNLI": TaskSpec(("sentence1", "sentence2"), "label", ("0", "1")),
}
TEXT_PAIRS = (
    ("sentence1", "sentence2"),
    ("question1", "question2"),
    ("question", "sentence"),
    ("#1 String", "#2 String"),
    ("premise", "hypothesis"),
    ("sentence",),
    ("text",),
)
LABEL_NAMES = ("label", "gold_label", "score", "is_duplicate", "Quality")
SPEC_FILE = "glue_task.json"


@dataclass(frozen=True)
class Example:
    texts: tuple[str, ...]  # one sentence, or a pair
    label: str  # as written in the file; `Task.target` maps it to a class index or a float


@dataclass
class Task:
    """A loaded task: training examples and one list of dev examples per dev split, all labeled."""

    name: str
    folder: Path
    spec: TaskSpec
    labels: tuple[str, ...]  # class names in output order (empty for a regression)
    train: list[Example]
    dev: dict[str, list[Example]]
    files: dict[str, str] = field(default_factory=dict)  # split -> file read
    skipped_rows: int = 0  # rows with fewer columns than the header (none in the bundled GLUE)

    @property
    def regression(self) -> bool:
        return self.spec.regression

    @property
    def num_labels(self) -> int:
        return 1 if self.regression else len(self.labels)

    def target(self, label: str) -> float | int:
        """The training target of a label: its class index, or its value for a regression."""
        return float(label) if self.regression else self.labels.index(label)


def split_file(folder: Path, split: str) -> Path | None:
    """`folder/split.tsv` or `folder/split.tsv.gz`, whichever exists (None: neither)."""
    for name in (f"{split}.tsv", f"{split}.tsv.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_tsv(path: Path) -> list[list[str]]:
    """Every row of a GLUE TSV (plain or gzip), fields as written: tab-separated, no quoting, BOM dropped."""
    csv.field_size_limit(sys.maxsize)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as f:
            return [row for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if row]
    except (*UNREADABLE, csv.Error) as e:
        raise DataError(f"cannot read {path}: {reason(e)}") from None


def task_folders(data_dir: Path) -> list[str]:
    """The task folders of `data_dir` that have a training split (sorted)."""
    if not data_dir.is_dir():
        return []
    return sorted(p.name for p in data_dir.iterdir() if p.is_dir() and split_file(p, "train"))


def find_task(data_dir: str | Path, task: str) -> Path:
    """The folder of `task` under `data_dir`: exact name, else case and `-`/`_` insensitive (sst2 -> SST-2).
    Raises ConfigError naming the tasks present when there is none, or when it has no train/dev split."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ConfigError(f"GLUE data folder not found: {data_dir}")
    key = lambda name: name.lower().replace("-", "").replace("_", "")
    folders = [p for p in data_dir.iterdir() if p.is_dir()]
    match = [p for p in folders if p.name == task] or [p for p in folders if key(p.name) == key(task)]
    if not match:
        have = ", ".join(task_folders(data_dir)) or "none"
        raise ConfigError(f"no GLUE task {task!r} in {data_dir} (tasks with a train split: {have})")
    folder = match[0]
    spec = task_spec(folder, None)
    for split in ("train", *spec.dev_splits):
        if split_file(folder, split) is None:
            raise ConfigError(f"{folder.name} has no {split} split in {data_dir} ({split}.tsv[.gz] missing)")
    return folder


def _spec_from_json(path: Path) -> TaskSpec:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        known = {"text_columns", "label_column", "labels", "metrics", "regression", "header", "dev_splits"}
        if not isinstance(raw, dict) or set(raw) - known or not raw.get("text_columns") or "label_column" not in raw:
            raise ValueError(f"expected text_columns and label_column (and optionally {', '.join(sorted(known))})")
        regression = bool(raw.get("regression", False))
        default_metrics = ("pearson", "spearman") if regression else ("accuracy",)
        labels = raw.get("labels")
        return TaskSpec(
            tuple(raw["text_columns"]),
            raw["label_column"],
            tuple(map(str, labels)) if labels else None,
            tuple(raw.get("metrics", default_metrics)),
            regression,
            bool(raw.get("header", True)),
            tuple(raw.get("dev_splits", ("dev",))),
        )
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"{path}: {e}") from None


def task_spec(folder: Path, train_rows: list[list[str]] | None) -> TaskSpec:
    """The spec of the task in `folder`: its glue_task.json, the table, or inferred from the training split's
    header and labels (when `train_rows` is given; before it is read, a placeholder that names the splits)."""
    if (folder / SPEC_FILE).is_file():
        return _spec_from_json(folder / SPEC_FILE)
    if folder.name in TASKS:
        return TASKS[folder.name]
    if train_rows is None:
        return TaskSpec(("?",), "?")
    header = train_rows[0] if train_rows else []
    texts = next((pair for pair in TEXT_PAIRS if all(c in header for c in pair)), None)
    label = next((c for c in LABEL_NAMES if c in header), None)
    if texts is None or label is None:
        raise ConfigError(
            f"{folder}: cannot tell the text and label columns from the header {header}; "
            f"write a {SPEC_FILE} naming them (see mosnas/bert/glue/data.py)"
        )
    values = [row[header.index(label)] for row in train_rows[1:] if len(row) == len(header)]
    if _is_regression(values):
        return TaskSpec(texts, label, metrics=("pearson", "spearman"), regression=True)
    return TaskSpec(texts, label)


def _is_regression(values: list[str]) -> bool:
    """True when every label is a number and at least one is written as a real (`5.000`, `1e-3`)."""
    try:
        [float(v) for v in values]
    except ValueError:
        return False
    return bool(values) and any(not v.strip().lstrip("+-").isdigit() for v in values)


def _examples(rows: list[list[str]], spec: TaskSpec, path: Path) -> tuple[list[Example], int]:
    """The examples of a split's rows and how many rows were skipped for missing columns."""
    if not rows:
        raise DataError(f"{path}: empty (no header, no rows)")
    header = rows[0] if spec.header else []
    if spec.header:
        rows = rows[1:]
    try:
        pos = lambda c: c if isinstance(c, int) else header.index(c)
        text_pos, label_pos = [pos(c) for c in spec.text_columns], pos(spec.label_column)
    except ValueError:
        wanted = [*spec.text_columns, spec.label_column]
        raise DataError(f"{path}: header {header} lacks one of the columns {wanted}") from None
    width = max(*text_pos, label_pos) + 1
    out = [Example(tuple(r[i] for i in text_pos), r[label_pos].strip()) for r in rows if len(r) >= width]
    return out, len(rows) - len(out)


def spec_columns(spec: TaskSpec) -> str:
    """The columns a task's rows need, as the message names them."""
    return ", ".join(str(c) for c in (*spec.text_columns, spec.label_column))


def _labels(spec: TaskSpec, train: list[Example]) -> tuple[str, ...]:
    if spec.regression:
        return ()
    if spec.labels is not None:
        return spec.labels
    found = {e.label for e in train}
    integral = all(v.lstrip("+-").isdigit() for v in found)
    return tuple(sorted(found, key=int if integral else str))


def load_task(data_dir: str | Path, task: str) -> Task:
    """Read `task` (a folder of `data_dir`, see `find_task`) with its spec; every label checked.

    Raises ConfigError for an unknown task or missing split, DataError for an unreadable file, a missing
    column, a label outside the task's label set or a regression target that is not a number."""
    folder = find_task(data_dir, task)
    train_path = split_file(folder, "train")
    train_rows = read_tsv(train_path)
    spec = task_spec(folder, train_rows)
    train, skipped = _examples(train_rows, spec, train_path)
    labels = _labels(spec, train)
    dev, files, split_skipped = {}, {"train": str(train_path)}, {"train": skipped}
    for split in spec.dev_splits:
        path = split_file(folder, split)
        if path is None:
            raise ConfigError(f"{folder.name} has no {split} split in {data_dir} ({split}.tsv[.gz] missing)")
        dev[split], split_skipped[split] = _examples(read_tsv(path), spec, path)
        files[split] = str(path)
    skipped = sum(split_skipped.values())
    loaded = Task(folder.name, folder, spec, labels, train, dev, files, skipped)
    for split, examples in [("train", train), *dev.items()]:
        if not examples:
            why = f" (every row has fewer columns than {spec_columns(spec)})" if split_skipped[split] else ""
            raise DataError(f"{files[split]}: no examples{why}")
        for e in examples:
            try:
                loaded.target(e.label)
            except ValueError:
                expected = "a number" if spec.regression else f"one of {', '.join(labels)}"
                raise DataError(f"{files[split]}: label {e.label!r} is not {expected}") from None
    if skipped:
        print(f"mosnas: warning: {folder.name}: skipped {skipped} rows with missing columns", file=sys.stderr)
    return loaded


def subset(examples: list[Any], limit: int, seed: int) -> list[Any]:
    """A seeded random subset of `limit` examples in file order (all of them when limit is 0 or larger).
    It depends only on the examples' count, `limit` and `seed`: every model gets the same examples."""
    if not limit or limit >= len(examples):
        return list(examples)
    keep = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]
