import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from wav2vec2_lite.asr.chunking import chunked_logits, conv_num_frames, iter_chunked_logits, plan_windows

from _tolerance import assert_float32_close, float32_excess

SR, STRIDE, RF = 16000, 320, 400


class LocalModel:
    """A stand-in for a CTC model whose output depends on a bounded neighbourhood.

    Frame t = a strided conv (kernel 400, stride 320: the wav2vec 2.0 feature
    encoder's geometry) with fixed random weights, squared, then summed over frames
    [t - context, t + context] (zero padded at the input's ends). Integer inputs and
    weights in float64 keep every sum exact, so chunked and full passes can be
    compared with ``torch.equal``. Records the length of every input it sees.
    """

    def __init__(self, context: int, vocab: int = 6, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randint(-2, 3, (vocab, RF), generator=g).double()  # (V, 400)
        self.context = context
        self.seen: list[int] = []
        self.grad_enabled: list[bool] = []

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:  # (1, s) -> (1, t, V)
        self.seen.append(wave.shape[-1])
        self.grad_enabled.append(torch.is_grad_enabled())
        frames = wave.unfold(-1, RF, STRIDE)  # (1, t, 400)
        h = (frames @ self.weight.T) ** 2  # (1, t, V)
        k = self.context
        padded = F.pad(h.transpose(1, 2), (k, k))  # (1, V, t + 2k)
        return padded.unfold(-1, 2 * k + 1, 1).sum(-1).transpose(1, 2)  # (1, t, V)


def integer_wave(num_samples: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-50, 51, (num_samples,), generator=g).double()


def test_60s_in_20s_chunks_equals_full_pass_exactly():
    wave = integer_wave(60 * SR + 123)  # not a whole number of frames
    model = LocalModel(context=50)  # 2 s overlap = 100 frames: 50 on each side of the cut
    full = model(wave[None])[0]
    model.seen.clear()
    model.grad_enabled.clear()
    chunked = chunked_logits(model, wave, chunk_s=20.0, overlap_s=2.0)
    assert chunked.shape == full.shape == (conv_num_frames(wave.numel()), 6)
    assert chunked.shape[0] == (wave.numel() - RF) // STRIDE + 1 == 3000
    assert torch.equal(chunked, full)
    assert len(model.seen) == 4 and max(model.seen) <= 20 * SR
    assert model.grad_enabled == [False] * 4


def test_context_beyond_half_the_overlap_is_not_exact():
    """The test above is sensitive: one frame more context than the overlap covers breaks it."""
    wave = integer_wave(60 * SR, seed=1)
    model = LocalModel(context=51)
    full = model(wave[None])[0]
    chunked = chunked_logits(model, wave, chunk_s=20.0, overlap_s=2.0)
    assert not torch.equal(chunked, full)
    # only frames within reach of a window edge differ
    bad = (chunked != full).any(-1).nonzero().flatten()
    assert 0 < bad.numel() <= 6


def test_long_input_runs_in_bounded_windows():
    """A long file relative to the window (the 1-hour case scaled down): 4 minutes
    in 1 s windows holds at most 1 s of audio per model call and stays exact."""
    wave = integer_wave(240 * SR + 7, seed=2)
    model = LocalModel(context=5)
    full = model(wave[None])[0]
    model.seen.clear()
    chunked = chunked_logits(model, wave, chunk_s=1.0, overlap_s=0.2)
    assert torch.equal(chunked, full)
    assert max(model.seen) <= SR
    # 49-frame windows stepping by 39 frames over 12000 frames
    assert len(model.seen) == -(-(12000 - 49) // 39) + 1


def test_short_input_is_one_call_and_exact():
    wave = integer_wave(3 * SR + 17)
    model = LocalModel(context=3)
    full = model(wave[None])[0]
    model.seen.clear()
    assert torch.equal(chunked_logits(model, wave), full)
    assert len(model.seen) == 1


def test_num_frames_fn_of_the_layerwise_conv_stack():
    def layerwise(n: int) -> int:
        for k, s in zip((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)):
            n = (n - k) // s + 1 if n >= k else 0
        return n

    wave = integer_wave(30 * SR + 333, seed=3)
    model = LocalModel(context=10)
    expected = chunked_logits(model, wave, chunk_s=5.0, overlap_s=1.0)
    got = chunked_logits(model, wave, chunk_s=5.0, overlap_s=1.0, num_frames_fn=layerwise)
    assert torch.equal(got, expected) and torch.equal(got, model(wave[None])[0])


def test_real_feature_encoder_chunked_matches_full():
    """The project's conv feature encoder (layer-norm mode: per-frame, so local)."""
    from wav2vec2_lite import Wav2Vec2Config
    from wav2vec2_lite.modules.feature_encoder import FeatureEncoder

    torch.manual_seed(0)
    cfg = Wav2Vec2Config.tiny(feat_extract_norm="layer", conv_bias=True, conv_dim=(16,) * 7)
    enc = FeatureEncoder(cfg).eval()
    wave = torch.randn(4 * SR + 250)

    def features(w):  # (1, s) -> (1, t, C)
        return enc(w).transpose(1, 2)

    with torch.no_grad():
        full = features(wave[None])[0]
    chunked = chunked_logits(
        features,
        wave,
        chunk_s=2.0,
        overlap_s=0.5,
        num_frames_fn=lambda n: int(enc.output_lengths(torch.tensor([n]))[0]),
    )
    assert chunked.shape == full.shape
    with torch.no_grad():
        exact = enc.double()(wave[None].double()).transpose(1, 2)[0]
    assert_float32_close(chunked, full, exact, "chunked features")  # other lengths, other kernels
    assert float32_excess(chunked * (1 + 1e-3), full, exact) > 1


def test_wrong_frame_count_from_the_model_is_reported():
    wave = integer_wave(5 * SR)
    with pytest.raises(ValueError, match="expected \\(1, 249, V\\)"):
        chunked_logits(lambda w: torch.zeros(1, 7, 3), wave)


@pytest.mark.parametrize(
    "num_samples, kwargs, message",
    [
        (399, {}, "too short for one frame"),
        (SR * 10, {"chunk_s": 1.0, "overlap_s": 1.0}, "smaller than a window"),
        (SR * 10, {"chunk_s": 0.01}, "shorter than one frame"),
    ],
)
def test_bad_arguments(num_samples, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plan_windows(num_samples, **kwargs)


def test_waveform_must_be_1d():
    with pytest.raises(ValueError, match=r"\(S,\)"):
        chunked_logits(LocalModel(1), torch.zeros(1, SR))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    num_samples=st.integers(RF, 200 * STRIDE),
    chunk_frames=st.integers(2, 40),
    overlap_frames=st.integers(0, 39),
)
def test_plan_tiles_the_frames_and_cuts_far_from_edges(num_samples, chunk_frames, overlap_frames):
    overlap_frames = min(overlap_frames, chunk_frames - 1)
    chunk_s = ((chunk_frames - 1) * STRIDE + RF) / SR
    windows = plan_windows(num_samples, chunk_s=chunk_s, overlap_s=overlap_frames * STRIDE / SR)
    total = conv_num_frames(num_samples)
    assert windows[0].keep_start == 0 and windows[-1].keep_end == total
    for prev, nxt in zip(windows, windows[1:]):
        assert prev.keep_end == nxt.keep_start  # kept ranges tile [0, T) in order
        assert nxt.frame_start > prev.frame_start
    for w in windows:
        n = w.sample_end - w.sample_start
        assert n <= round(chunk_s * SR) and w.sample_end <= num_samples
        assert w.sample_start == w.frame_start * STRIDE  # frame aligned
        assert conv_num_frames(n) == w.num_frames
        assert w.frame_start <= w.keep_start < w.keep_end <= w.frame_start + w.num_frames
        # every kept frame is >= overlap/2 frames from any window edge that is not a file edge
        half = overlap_frames // 2
        if w.frame_start > 0:
            assert w.keep_start - w.frame_start >= half
        if w.frame_start + w.num_frames < total:
            assert w.frame_start + w.num_frames - w.keep_end >= half


# ----------------------------------------------------------------------------- streamed input and decoding
@settings(max_examples=30, deadline=None, derandomize=True)
@given(block_sizes=st.lists(st.integers(1, 3 * SR), min_size=1, max_size=8))
def test_blocks_in_windows_out_equals_the_whole_wave(block_sizes):
    """Any cut of the wave into blocks gives chunked_logits' frames, window by window, reading
    the blocks only as far as each window needs."""
    wave = integer_wave(30 * SR + 71, seed=4)
    model = LocalModel(context=5)
    expected = chunked_logits(model, wave, chunk_s=4.0, overlap_s=0.4)
    cuts = np.cumsum(block_sizes * (wave.numel() // sum(block_sizes) + 1))
    blocks = np.split(wave.numpy(), cuts[cuts < wave.numel()])  # arrays, as AudioStream gives
    read: list[int] = []

    def source():
        for b in blocks:
            read.append(b.size)
            yield b

    model.seen.clear()
    pieces = []
    windows = plan_windows(wave.numel(), chunk_s=4.0, overlap_s=0.4)
    stream = iter_chunked_logits(model, source(), wave.numel(), chunk_s=4.0, overlap_s=0.4)
    for w, piece in zip(windows, stream, strict=True):
        pieces.append(piece)
        assert sum(read[:-1]) < w.sample_end <= sum(read)  # read as far as this window needs, no further
    assert torch.equal(torch.cat(pieces), expected)
    assert len(pieces) == len(model.seen) and max(model.seen) <= 4 * SR


def test_blocks_that_end_early_are_reported():
    blocks = [torch.zeros(5 * SR, dtype=torch.float64)]
    with pytest.raises(ValueError, match=r"the wave ends at sample 80000; a window needs samples"):
        list(iter_chunked_logits(LocalModel(1), blocks, 6 * SR, chunk_s=2.0, overlap_s=0.2))


def reference_greedy_with_timings(logits, vocab, frame_stride_s=0.02):
    """Greedy decoding with word timings over the whole tensor at once (the implementation before
    streaming), the oracle for GreedyTimings."""
    from itertools import groupby

    from wav2vec2_lite.asr.ctc_decode import _pieces
    from wav2vec2_lite.data.tokenizer import SPECIAL_TOKENS

    max_prob, ids = logits.float().softmax(dim=-1).max(dim=-1)
    max_prob = max_prob.tolist()
    pieces = _pieces(vocab, 0, "|", SPECIAL_TOKENS)
    words, chars = [], []
    start = end = 0

    def close_word():
        if chars:
            conf = sum(max_prob[start:end]) / (end - start)
            words.append(
                {"word": "".join(chars), "start_s": start * frame_stride_s, "end_s": end * frame_stride_s}
                | {"confidence": conf}
            )
            chars.clear()

    t = 0
    for k, run in groupby(ids.tolist()):
        n = sum(1 for _ in run)
        piece = pieces[k]
        if piece == " ":
            close_word()
        elif piece:
            for j, part in enumerate(piece.split(" ")):
                if j:
                    close_word()
                if part:
                    if not chars:
                        start = t
                    chars.append(part)
                    end = t + n
        t += n
    close_word()
    return " ".join(w["word"] for w in words), words


@settings(max_examples=60, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10**6), cuts=st.lists(st.integers(0, 400), max_size=12))
def test_greedy_timings_fed_in_pieces_equals_the_whole_tensor(seed, cuts):
    """Runs that span pieces (frames repeat: each id held 1-6 frames), words that span pieces,
    a token holding a space: the same text, words, timings and confidences, to the last bit."""
    from wav2vec2_lite.asr.ctc_decode import GreedyTimings

    vocab = ["<pad>", "<s>", "</s>", "<unk>", "|", "A", "B", "C D"]
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, len(vocab), (120,), generator=g)
    ids = ids.repeat_interleave(torch.randint(1, 7, (120,), generator=g))[:400]  # (T,) with runs
    logits = torch.randn(ids.numel(), len(vocab), generator=g)
    logits[torch.arange(ids.numel()), ids] += 4.0
    want = reference_greedy_with_timings(logits, vocab)
    decoder = GreedyTimings(vocab, 0.02)
    bounds = sorted({0, ids.numel(), *(min(c, ids.numel()) for c in cuts)})
    held = 0
    for a, b in zip(bounds, bounds[1:]):
        decoder.feed(logits[a:b])
        held = max(held, len(decoder._probs))
    assert decoder.result() == want and want[0]
    assert held < ids.numel() or len(bounds) == 2  # frames are dropped as words close
