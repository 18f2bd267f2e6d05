"""A line is a "\\n"-terminated line on every path: N lines in, N lines out, through the real CLI."""

import io
import sys

import pytest
import torch

from mosnas.cli.main import main
from mosnas.mt.data import read_lines, train_tokenizer
from mosnas.mt.export import save_model
from mosnas.mt.transformer import Transformer, TransformerConfig
from tests.conftest import DATA

NEL = "\x85"  # NEXT LINE: str.splitlines() breaks there; sentencepiece keeps it as a piece of its own


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two exported model folders sharing a tokenizer trained on Multi30k lines and a few holding NEL:
    "word" translates every line to a run of one ordinary piece, "NEL" to a run of NEL (a line break that
    is not "\\n"). The decoder's final LayerNorm outputs the constant u and the chosen piece's embedding
    row is 50 u, so that piece wins each step until max length forces EOS."""
    d = tmp_path_factory.mktemp("lines")
    lines = read_lines(DATA / "train.en.gz")[:300] + [f"Two dogs{NEL} run."] * 20
    sp = train_tokenizer(lines, 150, d / "spm.model")
    assert sp.id_to_piece(sp.piece_to_id(NEL)) == NEL
    dims = dict(encoder_ffn_dims=(32,), encoder_heads=(2,), decoder_ffn_dims=(32,), decoder_self_heads=(2,))
    cfg = TransformerConfig(sp.get_piece_size(), 16, 16, 16, **dims, decoder_cross_heads=(2,), decoder_spans=(1,))
    out = {}
    for name, piece in (("word", sp.encode("dog")[0]), ("NEL", sp.piece_to_id(NEL))):
        model = Transformer(cfg)
        with torch.no_grad():
            u = torch.zeros(16)
            u[0] = 1.0
            model.decoder_norm.weight.zero_()
            model.decoder_norm.bias.copy_(u)
            model.embed.weight[piece] = 50 * u
        out[name] = save_model(model, d / name, d / "spm.model")
    return out


INPUTS = {
    "form feed (the issue's example)": (b"A man\frides.\nTwo dogs.\n", 2),
    "no final newline": (b"A man\frides.\nTwo dogs.", 2),
    "CRLF": (b"A man rides.\r\nTwo dogs.\r\n", 2),
    "every other break character": (
        "a\vb\n c\x1cd\x1de\x1ef\ng\x85h\ni\u2028j\u2029k\nlone\rcarriage return\n".encode(),
        5,
    ),
    "empty lines": (b"\n\nA dog.\n\n", 4),
    "nothing": (b"", 0),
}


@pytest.mark.parametrize("output", ["word", "NEL"])
@pytest.mark.parametrize("via", ["stdin", "--input"])
@pytest.mark.parametrize("name", INPUTS)
def test_translate_writes_one_line_per_input_line(models, tmp_path, monkeypatch, capsysbinary, via, name, output):
    data, num_lines = INPUTS[name]
    args = ["translate", str(models[output]), "--beam", "2", "--quiet"]
    if via == "stdin":
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    else:
        (tmp_path / "in.txt").write_bytes(data)
        args += ["--input", str(tmp_path / "in.txt")]
    assert main(args) == 0
    out = capsysbinary.readouterr().out
    assert out.count(b"\n") == num_lines and out.endswith(b"\n") == (num_lines > 0)
    assert len(out.decode("utf-8").splitlines()) == num_lines  # no translation holds a line break of its own


def test_evaluate_writes_one_hypothesis_line_per_sentence(models, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "val.en").write_bytes(f"A man\frides.\nTwo dogs{NEL}run.\nA cat.\n".encode())
    (corpus / "val.de").write_bytes(b"Ein Mann reitet.\nZwei Hunde rennen.\nEine Katze.\n")
    args = ["evaluate", str(models["NEL"]), "--data", str(corpus), "--split", "val", "--beam", "2", "--quiet"]
    assert main(args) == 0
    assert "(3 sentences, val, en-de" in capsys.readouterr().out
    hyps = (models["NEL"] / "hyp.val.de").read_bytes()
    assert hyps.count(b"\n") == 3 and len(hyps.decode("utf-8").splitlines()) == 3
