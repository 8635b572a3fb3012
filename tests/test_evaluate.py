"""Scoring a split per sentence kind (the demo corpus's closed command domain vs open sentences)."""

from __future__ import annotations

import json

import pytest

from wav2vec2_lite.asr.evaluate import EvalResult, by_kind, sentence_kinds
from wav2vec2_lite.asr.metrics import cer, wer


def _result(refs, hyps, paths):
    return EvalResult(wer=wer(refs, hyps), cer=cer(refs, hyps), utterances=len(refs), hypotheses=hyps,
                      references=refs, paths=paths)


def test_by_kind_rescores_each_kind_at_corpus_level():
    refs = ["TURN ON THE LIGHTS", "SET A TIMER FOR FIVE MINUTES", "THE DOG READ A BOOK", "SHE SAW IT"]
    hyps = ["TURN ON THE LIGHT", "SET A TIMER FOR FIVE MINUTES", "THE DOG RED A BOK", "SHE SAW"]
    paths = ["wav/test/a.wav", "wav/test/b.wav", "wav/test/c.wav", "wav/test/d.wav"]
    kinds = {"wav/test/a.wav": "domain", "wav/test/b.wav": "domain", "wav/test/c.wav": "general",
             "wav/test/d.wav": "general"}
    parts = by_kind(_result(refs, hyps, paths), kinds)
    assert list(parts) == ["domain", "general"]
    assert parts["domain"].wer == pytest.approx(1 / 10)  # one substituted word of 4 + 6
    assert parts["general"].wer == pytest.approx(3 / 8)  # two substitutions + one deletion of 5 + 3
    assert parts["domain"].paths == ["wav/test/a.wav", "wav/test/b.wav"]
    assert parts["general"].cer == pytest.approx(cer(refs[2:], hyps[2:]))
    # an utterance the index does not know is left out, not guessed
    assert list(by_kind(_result(refs, hyps, paths), {"wav/test/c.wav": "general"})) == ["general"]


def test_sentence_kinds_reads_the_corpus_index_and_names_a_bad_line(tmp_path):
    assert sentence_kinds(tmp_path) == {}  # not a synthesized corpus
    index = tmp_path / "utterances.jsonl"
    index.write_text(json.dumps({"path": "wav/test/a.wav", "kind": "domain"}) + "\n"
                     + json.dumps({"path": "wav/test/b.wav", "kind": "general"}) + "\n")
    assert sentence_kinds(tmp_path) == {"wav/test/a.wav": "domain", "wav/test/b.wav": "general"}
    index.write_text(json.dumps({"path": "wav/test/a.wav", "kind": "domain"}) + "\n{\"path\": 1}\n")
    with pytest.raises(ValueError, match=r"utterances\.jsonl:2: not an utterance record"):
        sentence_kinds(tmp_path)
