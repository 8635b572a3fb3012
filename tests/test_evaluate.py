"""Scoring a split per sentence kind (the demo corpus's closed command domain vs open sentences)."""

from __future__ import annotations

import json

import pytest

from wav2vec2_lite.asr.evaluate import EvalResult, by_kind, sentence_kinds
from wav2vec2_lite.asr.metrics import cer, wer


def _result(refs, hyps, paths):
    return EvalResult(
        wer=wer(refs, hyps),
        cer=cer(refs, hyps),
        utterances=len(refs),
        hypotheses=hyps,
        references=refs,
        paths=paths,
    )


def test_by_kind_rescores_each_kind_at_corpus_level():
    refs = ["TURN ON THE LIGHTS", "SET A TIMER FOR FIVE MINUTES", "THE DOG READ A BOOK", "SHE SAW IT"]
    hyps = ["TURN ON THE LIGHT", "SET A TIMER FOR FIVE MINUTES", "THE DOG RED A BOK", "SHE SAW"]
    paths = ["wav/test/a.wav", "wav/test/b.wav", "wav/test/c.wav", "wav/test/d.wav"]
    kinds = {
        "wav/test/a.wav": "domain",
        "wav/test/b.wav": "domain",
        "wav/test/c.wav": "general",
        "wav/test/d.wav": "general",
    }
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
    index.write_text(
        json.dumps({"path": "wav/test/a.wav", "kind": "domain"})
        + "\n"
        + json.dumps({"path": "wav/test/b.wav", "kind": "general"})
        + "\n"
    )
    assert sentence_kinds(tmp_path) == {"wav/test/a.wav": "domain", "wav/test/b.wav": "general"}
    index.write_text(json.dumps({"path": "wav/test/a.wav", "kind": "domain"}) + '\n{"path": 1}\n')
    with pytest.raises(ValueError, match=r"utterances\.jsonl:2: not an utterance record"):
        sentence_kinds(tmp_path)


# ----------------------------------------------------------------------------- w2v2-evaluate
@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A tiny CTC model folder and a 4-utterance test split (one file broken), with sentence kinds."""
    import numpy as np
    import soundfile as sf
    import torch

    from wav2vec2_lite import Wav2Vec2ForCTC
    from wav2vec2_lite.config import Wav2Vec2Config
    from wav2vec2_lite.data.manifest import text_to_ltr, write_labels, write_manifest
    from wav2vec2_lite.data.tokenizer import CharTokenizer
    from wav2vec2_lite.serialization import save_model

    root = tmp_path_factory.mktemp("eval")
    tok = CharTokenizer(list("|ABC"))
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(Wav2Vec2Config.tiny(num_layers=1, vocab_size=len(tok)))
    with torch.no_grad():
        model.lm_head.bias[0] = -5.0  # letters over blank: non-empty hypotheses
    save_model(model, root / "model")
    tok.save(root / "model" / "tokenizer.json")
    data = root / "data"
    (data / "wav").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows, refs = [], ["AB C", "CAB", "A", "BAC A"]
    for i in range(4):
        sf.write(
            data / "wav" / f"u{i}.wav", (0.1 * rng.standard_normal(8000 + 800 * i)).astype(np.float32), 16000
        )
        rows.append((f"wav/u{i}.wav", 8000 + 800 * i))
    (data / "wav" / "u2.wav").write_bytes(b"RIFF broken")
    write_manifest(data / "test.tsv", data, rows)
    write_labels(data / "test.wrd", refs)
    write_labels(data / "test.ltr", [text_to_ltr(r) for r in refs])
    (data / "utterances.jsonl").write_text(
        "".join(
            json.dumps({"path": p, "kind": "domain" if i % 2 else "general"}) + "\n"
            for i, (p, _) in enumerate(rows)
        )
    )
    return root / "model", data, refs


def test_evaluate_cli_scores_records_and_counts_a_broken_file_as_empty(labelled, tmp_path, capsys):
    from wav2vec2_lite.asr.transcribe import Transcriber
    from wav2vec2_lite.cli import evaluate

    model, data, refs = labelled
    with pytest.raises(SystemExit) as code:
        evaluate([str(model), "--data", str(data), "--out", str(tmp_path / "out")])
    assert code.value.code == 1
    out, err = capsys.readouterr()
    assert "w2v2-evaluate: error: wav/u2.wav: " in err and "1 of 4 utterances failed" in err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    records = [json.loads(ln) for ln in (tmp_path / "out" / "utterances.jsonl").read_text().splitlines()]
    tr = Transcriber.from_path(model)
    hyps = [tr.transcribe_file(data / "wav" / f"u{i}.wav").text if i != 2 else "" for i in range(4)]
    assert [r["hyp"] for r in records] == hyps and [r["ref"] for r in records] == refs
    assert summary["wer"] == pytest.approx(wer(refs, hyps)) and summary["cer"] == pytest.approx(
        cer(refs, hyps)
    )
    assert summary["decoding"] == {"decoder": "greedy"} and summary["dtype"] == "float32"
    assert summary["failed"] == 1 and "error" in records[2] and records[2]["word_errors"] == 1
    assert (
        sum(r["char_errors"] for r in records)
        == summary["char_errors"]["substitutions"]
        + summary["char_errors"]["insertions"]
        + summary["char_errors"]["deletions"]
    )
    assert set(summary["by_kind"]) == {"domain", "general"} and [r["kind"] for r in records][:2] == [
        "general",
        "domain",
    ]
    assert f"test: WER {100 * summary['wer']:.2f} %" in out and "decoder=greedy; float32" in out


def test_evaluate_cli_beam_and_ltr_references_and_one_line_errors(labelled, tmp_path, capsys):
    from wav2vec2_lite.cli import evaluate

    model, data, refs = labelled
    evaluate(
        [
            str(model),
            "--data",
            str(data),
            "--labels",
            "ltr",
            "--decoder",
            "beam",
            "--beam-size",
            "4",
            "--limit",
            "2",
            "--out",
            str(tmp_path / "b"),
        ]
    )  # the first two files are readable: exit 0
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["decoding"] == {"decoder": "beam", "beam_size": 4} and summary["utterances"] == 2
    assert [
        json.loads(ln)["ref"] for ln in (tmp_path / "b" / "utterances.jsonl").read_text().splitlines()
    ] == refs[:2]
    capsys.readouterr()
    for argv, expected in (
        (["--lexicon", "w.txt"], "lexicon is used with a language model only"),
        (["--split", "valid"], "valid.tsv"),
        (["--decoder", "greedy", "--lm", "x.arpa"], "needs the beam decoder"),
    ):
        with pytest.raises(SystemExit) as code:
            evaluate([str(model), "--data", str(data), *argv])
        err = capsys.readouterr().err
        assert code.value.code == 2 and err.startswith("w2v2-evaluate: error: ") and expected in err, err
        assert "Traceback" not in err
