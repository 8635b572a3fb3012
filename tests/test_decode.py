import itertools
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from wav2vec2_lite.asr.decode import (
    BeamSearchDecoder,
    DecodingConfig,
    greedy_decode,
    greedy_decode_with_timings,
    labels_to_text,
    prefix_beam_search,
    prefix_beam_search_nbest,
)

VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "A", "O", "H", "L", "I", "R"]
IDX = {t: i for i, t in enumerate(VOCAB)}


def ids(tokens: str) -> list[int]:
    """'H _ I | T' -> ids; '_' is the blank."""
    return [IDX["<pad>" if t == "_" else t] for t in tokens.split()]


def one_hot_logits(rows: list[list[int]], peak: float = 10.0) -> torch.Tensor:
    x = torch.zeros(len(rows), len(rows[0]), len(VOCAB))
    x.scatter_(-1, torch.tensor(rows)[..., None], peak)
    return x


# ----------------------------------------------------------------------------- greedy
@pytest.mark.parametrize(
    "frames, text",
    [
        ("L L L", "L"),  # repeats collapse
        ("L _ L", "LL"),  # a blank separates a doubled letter
        ("H E L L _ L O", "HELLO"),
        ("_ H _ I | | _ T H E R E |", "HI THERE"),  # delimiter -> one space, ends stripped
        ("| | H I | _ | T O | |", "HI TO"),
        ("<s> H I </s>", "HI"),  # special tokens are dropped
        ("H <unk> I", "HI"),
        ("H <s> H", "HH"),  # a special token, like a blank, separates repeats
        ("_ _ _", ""),
    ],
)
def test_greedy_decode_ids(frames, text):
    assert greedy_decode(torch.tensor([ids(frames)]), None, VOCAB) == [text]


def test_greedy_decode_logits_match_ids_and_lengths_cut_padding():
    rows = [ids("H H _ I | T O _ _ _"), ids("A _ A L A R _ I T A")]
    lengths = torch.tensor([6, 7])  # row 0: "H H _ I | T"; row 1: "A _ A L A R _"
    assert greedy_decode(torch.tensor(rows), lengths, VOCAB) == ["HI T", "AALAR"]
    assert greedy_decode(one_hot_logits(rows), lengths, VOCAB) == ["HI T", "AALAR"]
    assert greedy_decode(one_hot_logits(rows), None, VOCAB) == ["HI TO", "AALARITA"]
    # numpy inputs work too
    assert greedy_decode(one_hot_logits(rows).numpy(), [6, 7], VOCAB) == ["HI T", "AALAR"]
    # zero-length utterance
    assert greedy_decode(torch.tensor(rows), torch.tensor([0, 10]), VOCAB) == ["", "AALARITA"]


def test_greedy_decode_rejects_bad_inputs():
    with pytest.raises(ValueError, match="V=5"):
        greedy_decode(torch.zeros(1, 3, 5), None, VOCAB)
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        greedy_decode(torch.zeros(3, len(VOCAB)), None, VOCAB)
    with pytest.raises(ValueError, match=r"\[0, 13\)"):
        greedy_decode(torch.tensor([[0, 13]]), None, VOCAB)
    with pytest.raises(ValueError, match="2 entries for a batch of 1"):
        greedy_decode(torch.tensor([[0, 1]]), torch.tensor([1, 2]), VOCAB)
    with pytest.raises(ValueError, match="output_lengths"):
        greedy_decode(torch.tensor([[0, 1]]), torch.tensor([3]), VOCAB)


def test_labels_to_text():
    assert labels_to_text(ids("H I | T H E R E"), VOCAB) == "HI THERE"
    assert labels_to_text(ids("L L"), VOCAB) == "LL"  # labels are not collapsed again


# ----------------------------------------------------------------------------- timings
def test_timings_hand_checked():
    #        frame: 0 1 2 3 4 5 6 7 8 9 10 11
    frames = ids("_ H H _ I | | _ T O O _")
    logits = one_hot_logits([frames])[0]
    logits[4, IDX["I"]] = 2.0  # frame 4 is less certain
    text, words = greedy_decode_with_timings(logits, VOCAB, frame_stride_s=0.02)
    assert text == "HI TO"
    assert [w["word"] for w in words] == ["HI", "TO"]
    # HI: first frame of H (1) to one past the last frame of I (4 + 1 = 5)
    assert words[0]["start_s"] == pytest.approx(0.02) and words[0]["end_s"] == pytest.approx(0.10)
    # TO: frames 8..10 -> [0.16, 0.22)
    assert words[1]["start_s"] == pytest.approx(0.16) and words[1]["end_s"] == pytest.approx(0.22)
    peak = math.exp(10) / (math.exp(10) + len(VOCAB) - 1)
    weak = math.exp(2) / (math.exp(2) + len(VOCAB) - 1)
    assert words[0]["confidence"] == pytest.approx((3 * peak + weak) / 4)  # frames 1,2,3,4
    assert words[1]["confidence"] == pytest.approx(peak)


def test_timings_length_and_specials():
    frames = ids("<s> A _ L | T </s> R")
    text, words = greedy_decode_with_timings(one_hot_logits([frames])[0], VOCAB, 0.5, length=6)
    assert text == "AL T"
    assert [(w["word"], w["start_s"], w["end_s"]) for w in words] == [("AL", 0.5, 2.0), ("T", 2.5, 3.0)]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1), st.integers(1, 80), st.floats(0.5, 8.0))
def test_timings_monotone_within_audio_and_match_greedy(seed, T, scale):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(T, len(VOCAB), generator=g) * scale
    text, words = greedy_decode_with_timings(logits, VOCAB, frame_stride_s=0.02)
    assert text == greedy_decode(logits[None], None, VOCAB)[0]
    assert text == " ".join(w["word"] for w in words)
    prev_end = 0.0
    for w in words:
        assert prev_end <= w["start_s"] < w["end_s"] <= T * 0.02 + 1e-9
        assert 1 / len(VOCAB) <= w["confidence"] <= 1.0
        assert w["word"] and " " not in w["word"]
        prev_end = w["end_s"]


# ----------------------------------------------------------------------------- prefix beam search
def test_beam_equals_greedy_on_peaked_inputs():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        frames = torch.randint(0, len(VOCAB), (1, 30), generator=g)
        frames[frames < 4] = 0  # only blanks among the specials
        logits = one_hot_logits(frames.tolist(), peak=12.0)[0] + 0.5 * torch.randn(
            30, len(VOCAB), generator=g
        )
        assert (
            prefix_beam_search(logits.log_softmax(-1), VOCAB, beam_width=8)
            == greedy_decode(logits[None], None, VOCAB)[0]
        )


def test_beam_finds_the_labelling_greedy_misses():
    # Two frames over {blank, A}: P(blank) = 0.6, P(A) = 0.4 at each.
    # Best path "_ _" -> "" has probability 0.36, but the labelling "A" collects
    # "A A", "A _", "_ A": 0.16 + 0.24 + 0.24 = 0.64.
    vocab = ["<pad>", "A"]
    probs = torch.tensor([[0.6, 0.4], [0.6, 0.4]], dtype=torch.float64)
    assert greedy_decode(probs[None], None, vocab) == [""]
    assert prefix_beam_search(probs.log(), vocab, beam_width=4) == "A"
    nbest = prefix_beam_search_nbest(probs.log(), beam_width=4)
    assert nbest[0][0] == (1,) and math.exp(nbest[0][1]) == pytest.approx(0.64)
    assert dict(nbest)[()] == pytest.approx(math.log(0.36))


def test_beam_finds_a_longer_word_greedy_misses():
    # Same effect inside a word: frames favour blank at the middle, but the two paths
    # through 'L' outweigh it: greedy says "AO", the labelling "ALO" is more probable.
    vocab = VOCAB
    p = torch.full((4, len(vocab)), 1e-4, dtype=torch.float64)
    p[0, IDX["A"]] = 1.0
    p[1, IDX["<pad>"]], p[1, IDX["L"]] = 0.55, 0.45
    p[2, IDX["<pad>"]], p[2, IDX["L"]] = 0.55, 0.45
    p[3, IDX["O"]] = 1.0
    lp = (p / p.sum(-1, keepdim=True)).log()
    assert greedy_decode(lp[None], None, vocab) == ["AO"]
    assert prefix_beam_search(lp, vocab, beam_width=8) == "ALO"


def _labelling_probs(lp: torch.Tensor) -> dict[tuple[int, ...], float]:
    """Exact P(labelling) by enumerating every path (tiny T, V only)."""
    T, V = lp.shape
    out: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(V), repeat=T):
        labels = tuple(k for k, _ in itertools.groupby(path) if k != 0)
        out[labels] = out.get(labels, 0.0) + math.exp(sum(lp[t, k].item() for t, k in enumerate(path)))
    return out


@settings(max_examples=15, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1), st.floats(0.3, 3.0))
def test_wide_beam_is_exact_against_enumeration_and_ctc_loss(seed, scale):
    T, V = 5, 3  # 63 possible prefixes < beam width 64: the search is exhaustive
    g = torch.Generator().manual_seed(seed)
    lp = (torch.randn(T, V, generator=g, dtype=torch.float64) * scale).log_softmax(-1)
    exact = _labelling_probs(lp)
    nbest = prefix_beam_search_nbest(lp, beam_width=64, token_min_logp=-math.inf)
    best_labels, best_lp = nbest[0]
    assert math.exp(best_lp) == pytest.approx(max(exact.values()), rel=1e-9)
    for labels, score in nbest[:10]:
        assert math.exp(score) == pytest.approx(exact[labels], rel=1e-9)
    # and the score is what CTC's forward algorithm gives that labelling
    if best_labels:
        nll = F.ctc_loss(
            lp[:, None, :],
            torch.tensor([best_labels]),
            torch.tensor([T]),
            torch.tensor([len(best_labels)]),
            blank=0,
            reduction="sum",
        )
        assert best_lp == pytest.approx(-nll.item(), rel=1e-9, abs=1e-12)


def test_beam_search_argument_checks():
    with pytest.raises(ValueError, match="beam_width"):
        prefix_beam_search_nbest(torch.zeros(2, 3), beam_width=0)
    with pytest.raises(ValueError, match="vocabulary has 13"):
        prefix_beam_search(torch.zeros(2, 3), VOCAB)


# ----------------------------------------------------------------------------- beam search + n-gram LM
def write_arpa(path, unigrams: dict[str, tuple[float, float | None]], bigrams: dict[tuple[str, str], float]):
    """A bigram ARPA file: log10 probabilities (and back-off weights of the unigrams)."""
    lines = ["\\data\\", f"ngram 1={len(unigrams)}", f"ngram 2={len(bigrams)}", "", "\\1-grams:"]
    lines += [f"{p}\t{w}" + (f"\t{b}" if b is not None else "") for w, (p, b) in unigrams.items()]
    lines += ["", "\\2-grams:"] + [f"{p}\t{a} {b}" for (a, b), p in bigrams.items()] + ["", "\\end\\", ""]
    path.write_text("\n".join(lines))
    return path


@pytest.fixture
def lm_path(tmp_path):
    """An LM that finds TO THE HALL likely and TO THE HELL / HALE unlikely."""
    uni = {
        "<unk>": (-3.0, None),
        "<s>": (-99.0, -0.3),
        "</s>": (-1.0, None),
        "TO": (-0.8, -0.3),
        "THE": (-0.7, -0.3),
        "HALL": (-1.2, -0.3),
        "HELL": (-3.5, -0.3),
        "HALE": (-3.5, -0.3),
    }
    bi = {("<s>", "TO"): -0.1, ("TO", "THE"): -0.1, ("THE", "HALL"): -0.2, ("HALL", "</s>"): -0.1}
    return write_arpa(tmp_path / "lm.arpa", uni, bi)


def _frames(spec: list[dict[str, float]]) -> torch.Tensor:
    """(T, V) log-probs: each frame's listed probabilities, the rest shared by every other token."""
    out = []
    for probs in spec:
        rest = (1.0 - sum(probs.values())) / (len(VOCAB) - len(probs))
        out.append(torch.tensor([probs.get(t, rest) for t in VOCAB]).log())
    return torch.stack(out)


def _hall_or_hell() -> torch.Tensor:
    """TO THE H?LL where the audio slightly prefers E over A."""
    spec = (
        [{c: 0.9} for c in "TO|THE|H"]
        + [{"E": 0.5, "A": 0.4}]
        + [{"L": 0.9}, {"<pad>": 0.9}, {"L": 0.9}, {"|": 0.9}]
    )
    return _frames(spec)


def test_the_lm_changes_a_hypothesis_the_right_way(lm_path):
    pytest.importorskip("flashlight.lib.text.decoder")
    lp = _hall_or_hell()
    assert greedy_decode(lp[None], torch.tensor([lp.shape[0]]), VOCAB) == ["TO THE HELL"]
    assert prefix_beam_search(lp, VOCAB, beam_width=16) == "TO THE HELL"
    assert BeamSearchDecoder(VOCAB, lm_path, lm_weight=0.0).decode(lp) == "TO THE HELL"  # the acoustics alone
    with_lm = BeamSearchDecoder(VOCAB, lm_path, lm_weight=1.0)
    assert with_lm.decode(lp) == "TO THE HALL"
    assert with_lm.decode_batch(torch.stack([lp, lp]), torch.tensor([lp.shape[0], 7])) == [
        "TO THE HALL",
        "TO THE",
    ]


def test_the_lexicon_limits_the_words_and_is_checked(lm_path, tmp_path):
    pytest.importorskip("flashlight.lib.text.decoder")
    lp = _hall_or_hell()
    (tmp_path / "words.txt").write_text("TO\nTHE\nHELL\nhall\n")  # lower case: not spelled by the vocabulary
    dec = BeamSearchDecoder(VOCAB, lm_path, lexicon=tmp_path / "words.txt", lm_weight=1.0)
    assert dec.decode(lp) == "TO THE HELL" and dec.skipped_words == 1
    with pytest.raises(ValueError, match="no word of the lexicon is spelled"):
        BeamSearchDecoder(VOCAB, lm_path, lexicon=["cat", "dog"])
    with pytest.raises(FileNotFoundError, match="language model not found"):
        BeamSearchDecoder(VOCAB, tmp_path / "none.arpa")
    (tmp_path / "bad.arpa").write_text("\\data\\\nngram 1=1\n\n\\1-grams:\n-1.0 TO\n\\end\\\n")
    with pytest.raises(ValueError, match="not a readable KenLM model"):
        BeamSearchDecoder(VOCAB, tmp_path / "bad.arpa")


def test_the_decoder_without_flashlight_says_how_to_install(monkeypatch, lm_path):
    monkeypatch.setitem(sys.modules, "flashlight.lib.text.decoder", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r"flashlight-text.*pip install 'wav2vec2_lite\[lm\]'"):
        BeamSearchDecoder(VOCAB, lm_path)


def test_decoding_config_builds_each_decoder_and_refuses_inconsistent_settings(lm_path):
    pytest.importorskip("flashlight.lib.text.decoder")
    lp = _hall_or_hell()
    assert DecodingConfig().build(VOCAB) is None  # greedy: the caller keeps the word timings
    assert DecodingConfig(decoder="beam", beam_size=4).build(VOCAB)(lp) == "TO THE HELL"
    assert DecodingConfig(decoder="beam", lm=str(lm_path), lm_weight=1.0).build(VOCAB)(lp) == "TO THE HALL"
    assert DecodingConfig(decoder="beam", lm="x.arpa").to_dict()["lexicon"] == "the LM's unigrams"
    for bad, match in (
        (dict(decoder="viterbi"), "greedy' or 'beam"),
        (dict(lm="x.arpa"), "needs the beam decoder"),
        (dict(decoder="beam", lexicon="w.txt"), "with a language model only"),
        (dict(decoder="beam", beam_size=0), "beam size"),
    ):
        with pytest.raises(ValueError, match=match):
            DecodingConfig(**bad).validate()
