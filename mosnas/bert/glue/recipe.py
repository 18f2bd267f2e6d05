"""The standard GLUE fine-tuning recipe per task (what `mosnas glue` uses where glue.epochs / glue.lr are 0)."""

from __future__ import annotations

# The standard fine-tuning recipe of MiniLM-class encoders per task (glue.epochs / glue.lr = 0 take it): AdamW,
# batch 32, max length 128, 10% linear warm-up then linear decay, weight decay 0.01 (glue.*); 3 epochs at 3e-5 on
# the large tasks, more passes at 5e-5 on the small ones, whose results move most with the number of updates
# (the MiniLM / Distiller recipes and the community GLUE runs collected in ../shared/design/seed-systems.md §4.2).
# (epochs, lr); a task outside the table: DEFAULT_RECIPE.
RECIPES: dict[str, tuple[float, float]] = {
    "CoLA": (5.0, 5e-5),
    "SST-2": (3.0, 3e-5),
    "MRPC": (5.0, 5e-5),
    "STS-B": (5.0, 5e-5),
    "RTE": (10.0, 5e-5),
    "QQP": (3.0, 3e-5),
    "MNLI": (3.0, 3e-5),
    "QNLI": (3.0, 3e-5),
    "WNLI": (5.0, 5e-5),
}
DEFAULT_RECIPE = (3.0, 5e-5)


def recipe(task: str, epochs: float, lr: float) -> tuple[float, float]:
    """(epochs, lr) of `task`: the ones given, each 0 replaced by the task's standard (RECIPES)."""
    std_epochs, std_lr = RECIPES.get(task, DEFAULT_RECIPE)
    return epochs or std_epochs, lr or std_lr
