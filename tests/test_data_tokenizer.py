"""CharTokenizer: vocab layout, encode/decode round trips, unknown symbols, save/load."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wav2vec2_lite.data.manifest import text_to_ltr, write_dictionary
from wav2vec2_lite.data.tokenizer import CharTokenizer, TokenizerError

LETTERS = "ETAONIHSRDLUMWCFGYPBVK'XJQZ"


@pytest.fixture
def tok(tmp_path: Path) -> CharTokenizer:
    counts = {"|": 1000, **{c: 900 - i for i, c in enumerate(LETTERS)}}
    write_dictionary(tmp_path / "dict.ltr.txt", counts)
    return CharTokenizer.from_dictionary(tmp_path / "dict.ltr.txt")


def test_vocab_layout(tok: CharTokenizer) -> None:
    assert tok.vocab[:6] == ["<pad>", "<s>", "</s>", "<unk>", "|", "E"]
    assert len(tok) == 4 + 1 + len(LETTERS)
    assert tok.blank_id == 0 and tok.word_delimiter_id == 4
    hf = tok.to_hf_vocab()
    assert hf["<pad>"] == 0 and hf["<unk>"] == 3 and hf["|"] == 4 and hf["E"] == 5
    assert CharTokenizer.from_hf_vocab(hf).vocab == tok.vocab


def test_encode_decode(tok: CharTokenizer) -> None:
    ids = tok.encode_text("hello  world")
    assert ids == tok.encode_ltr("H E L L O | W O R L D |")
    assert ids[5] == 4 and ids[-1] == 4
    assert tok.decode(ids) == "HELLO WORLD"
    assert tok.decode([0, 1, 2, 3, -100] + ids + [-100]) == "HELLO WORLD"
    # greedy CTC: repeats merge, blanks separate real doubles
    e_id, l_id, o_id = tok.index["E"], tok.index["L"], tok.index["O"]
    assert tok.decode([e_id, e_id, 0, l_id, l_id, 0, l_id, o_id, o_id], collapse_repeats=True) == "ELLO"


def test_unknown_symbol(tok: CharTokenizer, tmp_path: Path) -> None:
    with pytest.raises(TokenizerError) as e:
        tok.encode_text("café au lait")
    msg = str(e.value)
    assert "'É'" in msg and "U+00C9" in msg and "position 3" in msg and "dict.ltr.txt" in msg
    assert msg.endswith(
        "or map unknown symbols to <unk> with data.unk=map (CharTokenizer(unk='map') in Python)"
    )
    with pytest.raises(TokenizerError, match="'#'"):
        tok.encode_ltr("A B | # |")
    mapped = CharTokenizer.from_dictionary(tmp_path / "dict.ltr.txt", unk="map")
    assert mapped.encode_text("café")[3] == mapped.unk_id
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tok.decode([len(tok)])


def test_save_load(tok: CharTokenizer, tmp_path: Path) -> None:
    tok.save(tmp_path / "tok.json")
    back = CharTokenizer.load(tmp_path / "tok.json")
    assert back.vocab == tok.vocab and back.unk == tok.unk
    (tmp_path / "vocab.json").write_text(json.dumps(tok.to_hf_vocab()))
    assert CharTokenizer.from_hf_vocab(tmp_path / "vocab.json").vocab == tok.vocab
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(TokenizerError, match="bad.json"):
        CharTokenizer.load(tmp_path / "bad.json")


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    st.lists(st.text(alphabet=LETTERS.lower() + LETTERS, min_size=1, max_size=8), max_size=6),
    st.sampled_from([" ", "  ", "\t"]),
)
def test_round_trip_property(words: list[str], sep: str) -> None:
    tok = CharTokenizer(["|"] + list(LETTERS))
    text = sep.join(words)
    ids = tok.encode_text(text)
    assert ids == tok.encode_ltr(text_to_ltr(text))
    assert tok.decode(ids) == " ".join(w.upper() for w in words)
    assert all(4 <= i < len(tok) for i in ids)
