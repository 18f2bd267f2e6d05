"""The BERT pipeline's GLUE stage: every exported student of `mosnas run` is fine-tuned on `glue.tasks` with the
run's `glue` recipe (mosnas.bert.glue.harness: official dev metrics, seeded subsets), and the scores join its
results row.

Results live in the student's folder (`export/<subnet>/glue/<task>/result.json`) with what they were made from
(the weights' SHA-256 and the recipe): reused while both hold, redone when the student or the recipe changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mosnas.config import Config


def check_glue(cfg: Config) -> None:
    """Every task of `glue.tasks` is a folder of `glue.data` with train and dev splits (ConfigError otherwise)."""
    from mosnas.bert.glue.data import find_task

    for name in cfg.glue.tasks:
        find_task(cfg.glue.data, name)


def glue_scores(model_dir: Path, cfg: Config, progress: bool, upstream: dict[str, Any] | None) -> dict[str, Any]:
    """{task: {"metrics": official dev metrics in percent, "score", "summary", "train_examples", "dev_examples",
    "steps", "teacher": the teacher's {"metrics", "score"} under the same recipe}} of `model_dir` fine-tuned on
    each task of `glue.tasks` ({} for none). The teacher (`bert.teacher`) is fine-tuned once per run, in
    `RUN/teacher_glue/`, so every summary says how far its students are from it."""
    from mosnas.bert.glue.harness import finetune
    from mosnas.bert.teacher import teacher_path

    out: dict[str, Any] = {}
    for name in cfg.glue.tasks:
        # force: a result of an earlier export or recipe in this folder is replaced, not refused
        result = finetune(model_dir, name, None, model_dir, cfg.glue, progress=progress, force=True)
        keep = ("metrics", "score", "summary", "train_examples", "dev_examples", "steps", "lr", "seeds")
        teacher = finetune(teacher_path(cfg.bert.teacher), name, None, cfg.run_dir / "teacher_glue", cfg.glue,
                           progress=progress, force=True)  # fmt: skip
        out[result["task"]] = {k: result[k] for k in keep} | {"teacher": {k: teacher[k] for k in ("metrics", "score")}}
    return out


def glue_table(rows: list[dict[str, Any]]) -> list[str]:
    """A Markdown table of the rows' GLUE dev metrics (one column per task and metric); [] when none has any."""
    scored = [r for r in rows if r.get("glue")]
    if not scored:
        return []
    columns = []
    for r in scored:
        for task, res in r["glue"].items():
            columns += [(task, m) for m in res["metrics"] if (task, m) not in columns]
    teacher = {t: res["teacher"] for t, res in scored[0]["glue"].items() if "teacher" in res}
    head = ["subnet", *(f"{task} {metric}" for task, metric in columns), *(["of the teacher"] if teacher else [])]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(columns) + bool(teacher))]
    cell = lambda glue, t, m: f"{glue[t]['metrics'][m]:.2f}" if m in glue.get(t, {}).get("metrics", {}) else "-"
    for r in scored:
        share = [r["glue"][t]["score"] / teacher[t]["score"] for t in teacher if t in r["glue"] and teacher[t]["score"]]
        mean = f"{100 * sum(share) / len(share):.0f}%" if share else "-"
        lines.append(
            "| "
            + " | ".join([r["name"], *(cell(r["glue"], t, m) for t, m in columns), *([mean] if teacher else [])])
            + " |"
        )
    if teacher:
        lines.append("| teacher | " + " | ".join(cell(teacher, t, m) for t, m in columns) + " | 100% |")
    first = scored[0]["glue"]
    about = "; ".join(
        f"{t}: {res['train_examples']} train / {res['dev_examples']} dev examples, {res['steps']} steps"
        for t, res in first.items()
    )
    return [
        "GLUE dev scores after fine-tuning each exported student (no retraining between search and "
        f"fine-tuning; the run's `glue` recipe, identical for every row and for the teacher): {about}. "
        "'of the teacher': the mean over tasks of the student's score / the teacher's.",
        "",
        *lines,
    ]
