"""Deterministic English sentences for the demo corpus: the templates and the seeded generator.

Two kinds of sentence, both drawn from a seeded ``random.Random``:

* ``general``: templates over a shipped vocabulary of several hundred common words
  (nouns with plurals, verbs with their forms, adjectives, names, places, times), giving
  grammatical-ish sentences of 4-12 words ("the old farmer found a red box near the river").
* ``domain``: a small closed vocabulary of smart-home style commands, numbers and times
  ("turn the lights on in the kitchen", "set a timer for five minutes"), so that a tiny
  model reaches a word error rate worth measuring.

Sentences contain only words (numbers are spelled out), so the text spoken and the
transcript agree: ``transcript == normalize_transcript(text)``. The word lists are in
``word_lists``; number words and ``normalize_transcript`` (re-exported here) in ``transcript``.

    gen = SentenceGenerator(seed=0)
    s = gen.sample()          # Sentence(text="set a timer for five minutes.", transcript=..., kind="domain")
    gen.sample_many(100)      # same seed -> same list

Bump ``GENERATOR_VERSION`` whenever a change alters what a seed produces.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from wav2vec2_lite.corpus.transcript import (
    digits_to_words,
    normalize_transcript,
    number_to_words,
    time_to_words,
)
from wav2vec2_lite.corpus.word_lists import (
    ADJ_THAT_NEED_AN,
    ADJECTIVES,
    ANIMATE,
    CITIES,
    CONTACTS,
    DAYS,
    DEVICES,
    FEELINGS,
    FREQUENCY,
    GENRES,
    ITEMS,
    LOCATIONS,
    MANNER,
    NAMES,
    NOUNS,
    OBJECTS,
    OPENABLES,
    PEOPLE,
    PERSONS,
    PREPOSITIONS,
    ROOMS,
    SMALL_NUMBERS,
    TASKS,
    TIMER_RANGE,
    TIMES,
    UNITS,
    VI,
    VT,
    WEEKDAYS,
)

__all__ = [
    "GENERATOR_VERSION",
    "Sentence",
    "SentenceGenerator",
    "normalize_transcript",
    "number_to_words",
    "vocabulary",
    "MIN_WORDS",
    "MAX_WORDS",
]

GENERATOR_VERSION = 1
MIN_WORDS, MAX_WORDS = 4, 12


# --------------------------------------------------------------------------- phrases
def _time_words(rng: random.Random, *, part_of_day: bool = True) -> str:
    """A clock time in words ("seven thirty", "half past two", "noon"), maybe "in the morning"."""
    style = rng.random()
    if style < 0.1:
        return rng.choice(("noon", "midnight"))
    hour = rng.randint(1, 12)
    if style < 0.25:
        return (
            f"half past {number_to_words(hour)}"
            if rng.random() < 0.5
            else f"quarter past {number_to_words(hour)}"
        )
    minute = rng.choice((0, 0, 5, 10, 15, 20, 25, 30, 30, 35, 40, 45, 45, 50, 55))
    words = time_to_words(hour, minute)
    if part_of_day and rng.random() < 0.4:
        words += " " + rng.choice(("in the morning", "in the evening", "at night", "in the afternoon"))
    return words


def _duration_words(rng: random.Random) -> str:
    unit = rng.choice(UNITS)
    return f"{number_to_words(rng.randint(*TIMER_RANGE[unit]))} {unit}"


def _digits_words(rng: random.Random, n: int) -> str:
    return digits_to_words("".join(str(rng.randint(0, 9)) for _ in range(n)))


# --------------------------------------------------------------------------- templates

Template = Callable[[random.Random], str]


def _a(word: str) -> str:
    first = word.split()[0]
    return ("an " if first[0] in "aeiou" or first in ADJ_THAT_NEED_AN else "a ") + word


def _np(
    rng: random.Random, nouns=None, *, article: str = "the", adj_prob: float = 0.5, plural: bool = False
) -> str:
    """Noun phrase: "the old man", "a red box", "three boxes"."""
    noun = rng.choice(nouns or NOUNS)
    word = noun[1] if plural else noun[0]
    if rng.random() < adj_prob:
        word = rng.choice(ADJECTIVES) + " " + word
    if plural:
        return ("the " + word) if article == "the" else word
    return _a(word) if article == "a" else "the " + word


def _pp(rng: random.Random) -> str:
    return rng.choice(PREPOSITIONS) + " " + _np(rng, LOCATIONS, adj_prob=0.3)


def _maybe(rng: random.Random, p: float, s: str) -> str:
    return (" " + s) if rng.random() < p else ""


def _subject(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.4:
        return rng.choice(NAMES)
    if r < 0.55:
        return rng.choice(("i", "we", "they", "she", "he", "you"))
    return _np(rng, ANIMATE)


_GENERAL: tuple[Template, ...] = (
    lambda r: f"{_subject(r)} {r.choice(VT)[2]} {_np(r, OBJECTS, article='a')}{_maybe(r, 0.6, _pp(r))}.",
    lambda r: f"the {r.choice(ADJECTIVES)} {r.choice(NOUNS)[0]} {r.choice(VT)[2]} {_np(r)}.",
    lambda r: f"{_subject(r)} {r.choice(VI)[2]} {_pp(r)} {r.choice(TIMES)}.",
    lambda r: f"we will {r.choice(VT)[0]} {_np(r, OBJECTS)} {r.choice(TIMES)}.",
    lambda r: f"do you {r.choice(VT)[0]} {_np(r, OBJECTS, adj_prob=0.7)}?",
    lambda r: f"{r.choice(NAMES)} and {r.choice(NAMES)} {r.choice(VI)[2]} {_pp(r)}.",
    lambda r: f"there is {_np(r, OBJECTS, article='a', adj_prob=0.8)} {_pp(r)}.",
    lambda r: f"the {r.choice(NOUNS)[1]} were very {r.choice(ADJECTIVES)}{_maybe(r, 0.5, r.choice(TIMES))}.",
    lambda r: (
        f"i {r.choice(FEELINGS)} the {r.choice(NOUNS)[0]} {r.choice(VT)[1]} "
        f"{_np(r, OBJECTS, article=r.choice(('a', 'the')))}."
    ),
    lambda r: f"please {r.choice(VT)[0]} {_np(r, OBJECTS)} {_pp(r)}.",
    lambda r: (
        f"{r.choice(NAMES)} could not {r.choice(VT)[0]} the {r.choice(OBJECTS)[0]} "
        f"because it was too {r.choice(ADJECTIVES)}."
    ),
    lambda r: f"why did the {r.choice(NOUNS)[0]} {r.choice(VI)[0]} {_pp(r)}?",
    lambda r: (
        f"the {r.choice(NOUNS)[0]} was {r.choice(ADJECTIVES)} "
        f"and the {r.choice(NOUNS)[0]} was {r.choice(ADJECTIVES)}."
    ),
    lambda r: f"{r.choice(NAMES)} {r.choice(VI)[2]} {r.choice(MANNER)} {_pp(r)}.",
    lambda r: f"have you ever seen {_np(r, OBJECTS, article='a', adj_prob=0.9)}?",
    lambda r: (
        f"{r.choice(TIMES)} {_subject(r)} {r.choice(VT)[2]} {r.choice(SMALL_NUMBERS)} "
        f"{_np(r, OBJECTS, article='', plural=True, adj_prob=0.3)}."
    ),
    lambda r: f"don't {r.choice(VT)[0]} the {r.choice(OBJECTS)[0]}{_maybe(r, 0.5, _pp(r))}.",
    lambda r: (
        f"i can't find my {r.choice(ADJECTIVES)} {r.choice(OBJECTS)[0]}{_maybe(r, 0.5, r.choice(TIMES))}."
    ),
    lambda r: f"it's {_np(r, NOUNS, article='a', adj_prob=1.0)}{_maybe(r, 0.5, _pp(r))}.",
    lambda r: (
        f"the {r.choice(PEOPLE).split('/')[0]}'s {r.choice(OBJECTS)[0]} is {r.choice(ADJECTIVES)}"
        f"{_maybe(r, 0.4, _pp(r))}."
    ),
    lambda r: (
        f"{r.choice(NAMES)} {r.choice(VT)[1]} {_np(r, OBJECTS, plural=True, adj_prob=0.4)} {r.choice(TIMES)}."
    ),
    lambda r: f"she told me that {_np(r, PERSONS)} {r.choice(VI)[2]} {r.choice(MANNER)}.",
    lambda r: (
        f"my {r.choice(PEOPLE).split('/')[0]} {r.choice(VI)[2]} {_pp(r)}{_maybe(r, 0.4, r.choice(TIMES))}."
    ),
    lambda r: f"they {r.choice(FREQUENCY)} {r.choice(VT)[0]} {_np(r, OBJECTS, plural=True, adj_prob=0.3)}.",
    lambda r: (
        f"{r.choice(NAMES)} {r.choice(FREQUENCY)} {r.choice(VI)[1]} {_pp(r)}"
        f"{_maybe(r, 0.3, 'in the ' + r.choice(('morning', 'evening')))}."
    ),
)

_DOMAIN: tuple[Template, ...] = (
    lambda r: f"turn {r.choice(('on', 'off'))} the {r.choice(DEVICES)} in the {r.choice(ROOMS)}.",
    lambda r: f"turn the {r.choice(DEVICES)} {r.choice(('on', 'off'))} in the {r.choice(ROOMS)}.",
    lambda r: f"please switch {r.choice(('on', 'off'))} the {r.choice(ROOMS)} {r.choice(DEVICES)}.",
    lambda r: f"dim the {r.choice(ROOMS)} lights to {number_to_words(r.randrange(10, 100, 10))} percent.",
    lambda r: f"set the brightness to {number_to_words(r.randrange(5, 101, 5))} percent.",
    lambda r: f"set a timer for {_duration_words(r)}.",
    lambda r: (
        f"start a {number_to_words(r.randint(2, 60))} minute timer"
        f"{_maybe(r, 0.3, 'for the ' + r.choice(('pasta', 'rice', 'eggs', 'tea', 'cake')))}."
    ),
    lambda r: f"set an alarm for {_time_words(r)}.",
    lambda r: f"wake me up at {_time_words(r, part_of_day=False)} {r.choice(WEEKDAYS)}.",
    lambda r: (
        f"set the temperature to {number_to_words(r.randint(15, 28))} degrees"
        f"{_maybe(r, 0.5, 'in the ' + r.choice(ROOMS))}."
    ),
    lambda r: f"make it {r.choice(('warmer', 'cooler'))} in the {r.choice(ROOMS)} please.",
    lambda r: f"play some {r.choice(GENRES)} music in the {r.choice(ROOMS)}.",
    lambda r: (
        f"set the volume to {number_to_words(r.randint(1, 10))}{_maybe(r, 0.4, 'in the ' + r.choice(ROOMS))}."
    ),
    lambda r: f"turn the volume {r.choice(('up', 'down'))} in the {r.choice(ROOMS)}.",
    lambda r: f"what time is it in {r.choice(CITIES)}?",
    lambda r: f"what is the weather like in {r.choice(CITIES)} {r.choice(DAYS)}?",
    lambda r: f"will it rain in {r.choice(CITIES)} {r.choice(DAYS)}?",
    lambda r: f"remind me to {r.choice(TASKS)} at {_time_words(r)}.",
    lambda r: f"remind me to {r.choice(TASKS)} {r.choice(DAYS)}.",
    lambda r: f"call {r.choice(CONTACTS)} {r.choice(WEEKDAYS)} at {_time_words(r)}.",
    lambda r: f"dial {_digits_words(r, r.choice((4, 7)))}.",
    lambda r: f"add {r.choice(ITEMS)} and {r.choice(ITEMS)} to the shopping list.",
    lambda r: (
        f"{r.choice(('open', 'close'))} the {r.choice(OPENABLES)}{_maybe(r, 0.4, 'at ' + _time_words(r))}."
    ),
    lambda r: f"lock the {r.choice(OPENABLES)} and turn off the {r.choice(DEVICES)}.",
    lambda r: (
        f"how many {r.choice(UNITS)} are left on the {r.choice(('timer', 'oven timer', 'kitchen timer'))}?"
    ),
    lambda r: f"the code is {_digits_words(r, r.randint(4, 6))}.",
    lambda r: f"move the meeting to {_time_words(r, part_of_day=False)} {r.choice(WEEKDAYS)}.",
)


@dataclass(frozen=True)
class Sentence:
    """``text`` is what is spoken (words and punctuation), ``transcript`` its label."""

    text: str
    transcript: str
    kind: Literal["general", "domain"]

    @property
    def num_words(self) -> int:
        return len(self.transcript.split())


class SentenceGenerator:
    """Seeded sentence source: the same ``seed`` and calls give the same sentences.

    Args:
        seed: seed of the ``random.Random`` behind every choice.
        domain_fraction: probability that a sentence comes from the closed command domain.
        min_words, max_words: transcript length bounds (words); others are redrawn.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        domain_fraction: float = 0.5,
        min_words: int = MIN_WORDS,
        max_words: int = MAX_WORDS,
    ) -> None:
        if not 0.0 <= domain_fraction <= 1.0:
            raise ValueError(f"domain_fraction must be in [0, 1], found {domain_fraction}")
        if not 1 <= min_words <= max_words:
            raise ValueError(f"need 1 <= min_words <= max_words, found {min_words}, {max_words}")
        self.rng = random.Random(seed)
        self.domain_fraction = float(domain_fraction)
        self.min_words, self.max_words = int(min_words), int(max_words)

    def sample(self) -> Sentence:
        """One sentence whose transcript has ``min_words``..``max_words`` words."""
        rng = self.rng
        kind: Literal["general", "domain"] = "domain" if rng.random() < self.domain_fraction else "general"
        templates = _DOMAIN if kind == "domain" else _GENERAL
        for _ in range(1000):
            text = " ".join(rng.choice(templates)(rng).split())
            transcript = normalize_transcript(text)
            if self.min_words <= len(transcript.split()) <= self.max_words:
                return Sentence(text=text, transcript=transcript, kind=kind)
        raise RuntimeError(f"no {kind} sentence with {self.min_words}..{self.max_words} words in 1000 draws")

    def sample_many(self, n: int) -> list[Sentence]:
        return [self.sample() for _ in range(n)]


def vocabulary(kind: Literal["general", "domain", "all"] = "all") -> set[str]:
    """Upper-case words the generator can produce (found by sampling every template widely)."""
    words: set[str] = set()
    fractions = {"general": (0.0,), "domain": (1.0,), "all": (0.0, 1.0)}[kind]
    for frac in fractions:
        gen = SentenceGenerator(seed=12345, domain_fraction=frac, min_words=1, max_words=100)
        for s in gen.sample_many(20000):
            words.update(s.transcript.split())
    return words
