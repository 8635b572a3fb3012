"""Built-in demo corpus: English speech synthesized offline with eSpeak NG.

* ``espeak.Synthesizer``: text -> 16 kHz float32 wave (voice, variant, rate, pitch, word gap).
* ``sentences``: seeded sentence generator (general English + a closed command domain) and
  ``normalize_transcript``.
* ``build.build_corpus``: wav files, fairseq manifests/labels/dictionary, corpus.json.
* ``augment``: speed perturbation, EQ tilt, synthetic reverberation, coloured noise
  (``Diversity``, presets ``DIVERSITY_PRESETS``: "none", "diverse", "diverse_train").

See docs/corpus.md.
"""

from wav2vec2_lite.corpus.augment import DIVERSITY_PRESETS, Diversity
from wav2vec2_lite.corpus.build import (
    DEFAULT_MINUTES,
    EXTRA_VARIANTS,
    FULL_MINUTES,
    SPLITS,
    Speaker,
    UtteranceSpec,
    build_corpus,
    corpus_minutes,
    make_extra_speakers,
    make_speakers,
    plan_capacity,
    render_utterance,
)
from wav2vec2_lite.corpus.espeak import SynthesisError, Synthesizer
from wav2vec2_lite.corpus.sentences import Sentence, SentenceGenerator, normalize_transcript, number_to_words

__all__ = [
    "DEFAULT_MINUTES",
    "DIVERSITY_PRESETS",
    "EXTRA_VARIANTS",
    "FULL_MINUTES",
    "SPLITS",
    "Diversity",
    "Sentence",
    "SentenceGenerator",
    "Speaker",
    "SynthesisError",
    "Synthesizer",
    "UtteranceSpec",
    "build_corpus",
    "corpus_minutes",
    "make_extra_speakers",
    "make_speakers",
    "normalize_transcript",
    "number_to_words",
    "plan_capacity",
    "render_utterance",
]
