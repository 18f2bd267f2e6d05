"""Kind 3 of issue 33: a count a report prints is of the object it reports (a subset says it is one)."""

import pytest

from mosnas.bert.glue.metrics import summary_line
from mosnas.cli.model import sentence_count
from mosnas.pipeline.report import _scored_on

GLUE = {"metrics": {"accuracy": 80.0}, "std": {}, "lr": 3e-5, "lrs": [3e-5], "seeds": [1], "epochs": 3.0}


@pytest.mark.parametrize(
    "counts, shown",
    [
        ((872, 872, 67349, 67349), "(all 872 dev examples; 3 epochs over all 67,349 train examples"),
        ((64, 872, 2000, 67349), "(64 of 872 dev examples; 3 epochs over 2,000 of 67,349 train examples"),
        ((872, None, 2000, None), "(872 dev examples; 3 epochs over 2,000 train examples"),  # an older record
    ],
    ids=["whole sets", "subsets", "no totals recorded"],
)
def test_glue_lines_count_the_examples_used(counts, shown):
    dev, dev_all, train, train_all = counts
    result = GLUE | {"dev_examples": dev, "train_examples": train}
    result |= {k: v for k, v in [("dev_examples_available", dev_all), ("train_examples_available", train_all)] if v}
    assert shown in summary_line("SST-2", result)


@pytest.mark.parametrize(
    "row, shown, scored_on",
    [
        ({"sentences": 1000, "sentences_available": 1000}, "1,000", "test, 1,000 sent., beam 4"),
        ({"sentences": 4, "sentences_available": 1000}, "4 of 1,000", "test, 4 of 1,000 sent., beam 4"),
        ({"sentences": 4}, "4", "test, 4 sent., beam 4"),  # an older result without the total
    ],
    ids=["whole split", "a --limit subset", "no total recorded"],
)
def test_translation_scores_count_the_sentences_scored(row, shown, scored_on):
    assert sentence_count(row) == shown
    assert _scored_on({"split": "test", "beam": 4, **row}) == scored_on
