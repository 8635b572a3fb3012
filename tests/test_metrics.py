import random
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wav2vec2_lite.asr.metrics import (
    ErrorCounts,
    align_counts,
    cer,
    char_errors,
    edit_distance,
    wer,
    word_errors,
)


# ----------------------------------------------------------------------------- hand-checked
def test_wer_identical_is_zero():
    assert wer(["the cat sat"], ["the cat sat"]) == 0.0


def test_wer_substitution():
    c = word_errors(["the cat sat"], ["the bat sat"])
    assert c == ErrorCounts(substitutions=1, insertions=0, deletions=0, ref_len=3)
    assert c.errors == 1
    assert wer(["the cat sat"], ["the bat sat"]) == pytest.approx(1 / 3)


def test_wer_deletion_and_insertion():
    assert word_errors(["the cat sat"], ["the sat"]) == ErrorCounts(0, 0, 1, 3)
    assert word_errors(["the cat sat"], ["the big cat sat"]) == ErrorCounts(0, 1, 0, 3)
    # one of each: "a b c d" -> "a x c d e" has S=1 (b->x), I=1 (e)
    assert word_errors(["a b c d"], ["a x c d e"]) == ErrorCounts(1, 1, 0, 4)
    # "a b c d" -> "b c d": one deletion, not three substitutions
    assert word_errors(["a b c d"], ["b c d"]) == ErrorCounts(0, 0, 1, 4)


def test_wer_empty_hypothesis_is_all_deletions():
    assert word_errors(["a b c"], [""]) == ErrorCounts(0, 0, 3, 3)
    assert wer(["a b c"], [""]) == 1.0
    assert cer(["ab c"], [""]) == 1.0


def test_wer_can_exceed_one_with_insertions():
    assert wer(["a"], ["b c d"]) == 3.0  # 1 substitution + 2 insertions over 1 word


def test_empty_references_raise_clearly():
    with pytest.raises(ValueError, match="empty"):
        wer([""], ["hello"])
    with pytest.raises(ValueError, match="empty"):
        cer(["   "], [""])
    with pytest.raises(ValueError, match="empty"):
        wer([], [])


def test_empty_reference_within_a_corpus_counts_insertions():
    # the second utterance has no reference words: its 2 hypothesis words are insertions
    assert word_errors(["a b", ""], ["a b", "x y"]) == ErrorCounts(0, 2, 0, 2)
    assert wer(["a b", ""], ["a b", "x y"]) == 1.0


def test_wer_is_corpus_level_not_mean_of_utterances():
    refs, hyps = ["a", "b c d e"], ["x", "b c d e"]
    assert wer(refs, hyps) == pytest.approx(1 / 5)  # a per-utterance mean would be 0.5


def test_whitespace_and_cer():
    # whitespace runs collapse and ends strip, for words and characters alike
    assert wer(["  the   cat "], ["the cat"]) == 0.0
    assert char_errors(["  ab   c "], ["ab c"]) == ErrorCounts(0, 0, 0, 4)
    # spaces are characters: "ab c" -> "abc" deletes the space
    assert char_errors(["ab c"], ["abc"]) == ErrorCounts(0, 0, 1, 4)
    assert cer(["ab c"], ["abc"]) == 0.25
    assert cer(["kitten"], ["sitting"]) == pytest.approx(3 / 6)
    # case is compared as given
    assert cer(["A"], ["a"]) == 1.0


def test_single_strings_are_one_utterance_not_characters():
    assert wer("the cat", "the hat") == 0.5
    assert word_errors("the cat", "the hat").ref_len == 2


def test_mismatched_lengths_and_types_raise():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="pair 0"):
        wer([["a"]], ["a"])


def test_error_counts_accumulate_and_round_trip_tensor():
    a = word_errors(["a b c"], ["a x c"])
    b = word_errors(["d e"], ["d e f"])
    total = a + b
    assert total == ErrorCounts(1, 1, 0, 5)
    assert total.rate == wer(["a b c", "d e"], ["a x c", "d e f"])
    t = total.as_tensor()
    assert t.dtype == torch.long and t.tolist() == [1, 1, 0, 5]
    assert ErrorCounts.from_tensor(t) == total
    # without torch.distributed initialised, all_reduce is the identity
    assert total.all_reduce() == total
    with pytest.raises(ValueError, match="empty"):
        ErrorCounts().rate


def test_all_reduce_through_a_real_process_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        counts = word_errors(["a b c"], ["a x"])
        assert counts.all_reduce() == counts == ErrorCounts(1, 0, 1, 3)
    finally:
        dist.destroy_process_group()


def test_all_reduce_sums_what_the_other_ranks_hold(monkeypatch):
    """Two ranks simulated: the collective adds rank 1's counts into rank 0's tensor."""
    import torch.distributed as dist

    other_rank = word_errors(["d e f g"], ["d x f g h"])  # S=1, I=1 over 4 words
    calls = []

    def fake_all_reduce(t, op=None, group=None):
        calls.append(op)
        t += other_rank.as_tensor()

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", fake_all_reduce)
    summed = word_errors(["a b c"], ["a b"]).all_reduce()
    assert summed == ErrorCounts(1, 1, 1, 7)
    assert calls == [dist.ReduceOp.SUM]


# ----------------------------------------------------------------------------- edit distance
def _brute_distance(a, b) -> int:
    """Plain recursive Levenshtein with memoisation (the textbook definition)."""
    from functools import lru_cache

    @lru_cache(maxsize=None)
    def d(i, j):
        if i == 0:
            return j
        if j == 0:
            return i
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))

    return d(len(a), len(b))


small_text = st.text(alphabet="ab c", max_size=9)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(small_text, small_text)
def test_edit_distance_matches_brute_force(a, b):
    c = align_counts(a, b)
    assert c.errors == edit_distance(a, b) == _brute_distance(a, b)
    # the breakdown is a real alignment: it uses each side's tokens at most once
    assert c.ref_len == len(a)
    assert c.insertions - c.deletions == len(b) - len(a)
    assert c.substitutions + c.deletions <= len(a)
    assert c.substitutions + c.insertions <= len(b)
    assert min(c.substitutions, c.insertions, c.deletions) >= 0


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.lists(st.sampled_from(["the", "cat", "sat", "on"]), max_size=7),
    st.lists(st.sampled_from(["the", "cat", "mat", "on"]), max_size=7),
)
def test_edit_distance_on_word_lists_is_symmetric(a, b):
    assert edit_distance(a, b) == edit_distance(b, a) == _brute_distance(a, b)


def test_edit_distance_10k_characters_is_fast_and_exact():
    rng = random.Random(0)
    a = "".join(rng.choice("abcdefghij ") for _ in range(10_000))
    b = a[:2000] + a[3500:7000] + a[7500:]  # 2000 characters deleted in two blocks
    t0 = time.perf_counter()
    counts = align_counts(a, b)
    elapsed = time.perf_counter() - t0
    # the distance is at least the length difference, and two block deletions reach it
    assert counts == ErrorCounts(substitutions=0, insertions=0, deletions=2000, ref_len=10_000)
    assert align_counts(b, a) == ErrorCounts(0, 2000, 0, 8000)
    # a fully different hypothesis: the shared prefix/suffix shortcut cannot help
    c = "".join(rng.choice("klmnopqrst") for _ in range(10_000))
    assert edit_distance(a, c) == 10_000
    assert elapsed < 5.0


def test_corpus_wer_and_cer_match_jiwer_on_random_strings():
    jiwer = pytest.importorskip("jiwer")
    rng = random.Random(7)
    words = ["A", "AB", "BA", "ABC", "C", "CAB", "BB"]
    for _ in range(50):
        n = rng.randint(1, 6)
        refs = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 8))) for _ in range(n)]
        hyps = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 8))) for _ in range(n)]
        assert wer(refs, hyps) == pytest.approx(jiwer.wer(refs, hyps), abs=1e-12)
        assert cer(refs, hyps) == pytest.approx(jiwer.cer(refs, hyps), abs=1e-12)
