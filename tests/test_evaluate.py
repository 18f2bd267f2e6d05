import pytest

from mosnas.errors import DataError
from mosnas.evaluate import score


def test_scores_match_sacrebleu_conventions():
    refs = ["Ein Hund läuft über die Wiese.", "Zwei Männer spielen Fußball im Park."]
    perfect = score(refs, refs)
    assert perfect["bleu"] == 100.0 and perfect["chrf"] == 100.0
    assert perfect["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert "nc:6" in perfect["chrf_signature"]
    worse = score(["Ein Hund läuft.", "Männer spielen im Park."], refs)
    assert 0 < worse["bleu"] < 100 and 0 < worse["chrf"] < 100


def test_length_mismatch_is_an_error():
    with pytest.raises(DataError, match="2 hypotheses but 1 references"):
        score(["a", "b"], ["a"])
