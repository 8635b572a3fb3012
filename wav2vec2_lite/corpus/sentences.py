"""Deterministic English sentences for the demo corpus, and transcript normalisation.

Two kinds of sentence, both drawn from a seeded ``random.Random``:

* ``general``: templates over a shipped vocabulary of several hundred common words
  (nouns with plurals, verbs with their forms, adjectives, names, places, times), giving
  grammatical-ish sentences of 4-12 words ("the old farmer found a red box near the river").
* ``domain``: a small closed vocabulary of smart-home style commands, numbers and times
  ("turn the lights on in the kitchen", "set a timer for five minutes"), so that a tiny
  model reaches a word error rate worth measuring.

Sentences contain only words (numbers are spelled out), so the text spoken and the
transcript agree: ``transcript == normalize_transcript(text)``.

    gen = SentenceGenerator(seed=0)
    s = gen.sample()          # Sentence(text="set a timer for five minutes.", transcript=..., kind="domain")
    gen.sample_many(100)      # same seed -> same list

Bump ``GENERATOR_VERSION`` whenever a change alters what a seed produces.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

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

# --------------------------------------------------------------------------- numbers

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_IRREGULAR = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip


def number_to_words(n: int) -> str:
    """Cardinal in words, American style without "and": 2105 -> "two thousand one hundred five"."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return number_to_words(head) + " " + name + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError("unreachable")


def _ordinal_words(n: int) -> str:
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _digits_to_words(digits: str) -> str:
    return " ".join(_ONES[int(d)] for d in digits)


def _time_to_words(hours: int, minutes: int) -> str:
    if minutes == 0:
        return number_to_words(hours) + " o'clock"
    if minutes < 10:
        return number_to_words(hours) + " oh " + _ONES[minutes]
    return number_to_words(hours) + " " + number_to_words(minutes)


def _spell_numbers(text: str) -> str:
    """Replace times, ordinals, decimals, percentages and integers by words."""
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 -> 1000
    text = re.sub(
        r"\b(\d{1,2}):(\d{2})\b",
        lambda m: f" {_time_to_words(int(m.group(1)), int(m.group(2)))} ",
        text,
    )
    text = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: f" {_ordinal_words(int(m.group(1)))} ", text, flags=re.IGNORECASE)
    text = re.sub(
        r"\b(\d+)\.(\d+)\b",
        lambda m: f" {number_to_words(int(m.group(1)))} point {_digits_to_words(m.group(2))} ",
        text,
    )
    text = re.sub(r"(\d)\s*%", r"\1 percent ", text)
    return re.sub(r"\d+", lambda m: f" {_integer_words(m.group())} ", text)


def _integer_words(digits: str) -> str:
    """A digit run as words: digit by digit if it has a leading zero or is very long (codes)."""
    if (digits[0] == "0" and len(digits) > 1) or len(digits) > 15:
        return _digits_to_words(digits)
    return number_to_words(int(digits))


_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u00b4": "'"})


def normalize_transcript(text: str) -> str:
    """Upper-case letters A-Z, apostrophe and single spaces; digits spelled out.

    ``"Set a timer for 5 minutes!"`` -> ``"SET A TIMER FOR FIVE MINUTES"``;
    ``"It's 7:30, isn't it?"`` -> ``"IT'S SEVEN THIRTY ISN'T IT"``. Accents are dropped
    (``café`` -> ``CAFE``), ``&`` is ``and``, hyphens and other punctuation separate words,
    and an apostrophe is kept only inside a word (quotes are removed). Idempotent.
    """
    text = text.translate(_APOSTROPHES)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.replace("&", " and ")
    text = _spell_numbers(text)
    text = re.sub(r"[^A-Za-z' ]+", " ", text)
    words = []
    for word in text.split():
        word = re.sub(r"'{2,}", "'", word).strip("'")
        if word:
            words.append(word.upper())
    return " ".join(words)


# --------------------------------------------------------------------------- vocabulary
# Plain lists, one word (or "singular/plural", "base/third/past/ing") per entry. Words
# that start with a vowel letter but not a vowel sound (one, unit, hour...) are avoided so
# that "a"/"an" follows the first letter.

_PEOPLE = (
    "man/men woman/women child/children boy/boys girl/girls baby/babies friend/friends "
    "teacher/teachers doctor/doctors farmer/farmers driver/drivers student/students "
    "neighbor/neighbors king/kings queen/queens mother/mothers father/fathers "
    "sister/sisters brother/brothers uncle/uncles aunt/aunts cook/cooks singer/singers "
    "painter/painters sailor/sailors soldier/soldiers nurse/nurses baker/bakers "
    "player/players writer/writers guest/guests stranger/strangers officer/officers"
).split()
_ANIMALS = (
    "dog/dogs cat/cats horse/horses bird/birds fish/fish cow/cows sheep/sheep mouse/mice "
    "rabbit/rabbits duck/ducks goat/goats pig/pigs fox/foxes bear/bears lion/lions "
    "tiger/tigers monkey/monkeys elephant/elephants frog/frogs snake/snakes owl/owls"
).split()
_THINGS = (
    "book/books letter/letters box/boxes cup/cups table/tables chair/chairs door/doors "
    "window/windows car/cars boat/boats train/trains bag/bags coat/coats hat/hats "
    "shoe/shoes key/keys phone/phones clock/clocks lamp/lamps picture/pictures "
    "paper/papers pen/pens ball/balls bottle/bottles glass/glasses plate/plates "
    "apple/apples orange/oranges egg/eggs cake/cakes basket/baskets blanket/blankets "
    "bicycle/bicycles camera/cameras candle/candles coin/coins map/maps mirror/mirrors "
    "needle/needles pillow/pillows ring/rings rope/ropes spoon/spoons stone/stones "
    "ticket/tickets tool/tools toy/toys umbrella/umbrellas wallet/wallets watch/watches "
    "wheel/wheels drum/drums guitar/guitars kite/kites ladder/ladders envelope/envelopes"
).split()
_PLACES = (
    "house/houses garden/gardens city/cities town/towns village/villages road/roads "
    "street/streets river/rivers lake/lakes mountain/mountains forest/forests "
    "field/fields school/schools church/churches market/markets shop/shops "
    "station/stations park/parks office/offices kitchen/kitchens room/rooms "
    "bridge/bridges island/islands hill/hills beach/beaches farm/farms library/libraries "
    "hospital/hospitals hotel/hotels restaurant/restaurants airport/airports "
    "museum/museums castle/castles harbor/harbors valley/valleys"
).split()
_ADJECTIVES = (
    "big small old new young long short tall red blue green yellow white black brown "
    "happy sad quiet loud dark bright warm cold hot wet dry heavy light clean dirty soft "
    "hard strong weak fast slow rich poor busy empty full early late kind clever tired "
    "hungry angry famous strange simple beautiful pretty friendly lucky careful narrow "
    "wide deep sweet fresh broken golden wooden tiny huge gentle brave calm proud shy "
    "funny lazy noisy rare round sharp silver smooth thin thick wild ancient elegant "
    "enormous honest orange purple"
).split()
_ADJ_THAT_NEED_AN = ("honest",)  # silent h
_NAMES = (
    "anna peter maria john david sarah tom lucy james emma paul kate mark laura george "
    "helen robert alice michael susan daniel rachel simon julia oliver grace henry "
    "sophie frank nina"
).split()
_TRANSITIVE = (
    "see/sees/saw find/finds/found take/takes/took bring/brings/brought carry/carries/carried "
    "open/opens/opened close/closes/closed paint/paints/painted build/builds/built "
    "buy/buys/bought sell/sells/sold watch/watches/watched clean/cleans/cleaned "
    "move/moves/moved pull/pulls/pulled push/pushes/pushed wash/washes/washed fix/fixes/fixed "
    "lift/lifts/lifted hold/holds/held read/reads/read draw/draws/drew visit/visits/visited "
    "follow/follows/followed help/helps/helped call/calls/called need/needs/needed "
    "want/wants/wanted like/likes/liked love/loves/loved leave/leaves/left keep/keeps/kept "
    "catch/catches/caught throw/throws/threw drop/drops/dropped miss/misses/missed "
    "remember/remembers/remembered forget/forgets/forgot choose/chooses/chose "
    "hide/hides/hid break/breaks/broke send/sends/sent show/shows/showed check/checks/checked "
    "count/counts/counted fill/fills/filled hear/hears/heard touch/touches/touched "
    "wrap/wraps/wrapped"
).split()
_INTRANSITIVE = (
    "walk/walks/walked run/runs/ran sleep/sleeps/slept sit/sits/sat stand/stands/stood "
    "wait/waits/waited laugh/laughs/laughed smile/smiles/smiled sing/sings/sang "
    "dance/dances/danced swim/swims/swam shout/shouts/shouted rest/rests/rested "
    "listen/listens/listened work/works/worked play/plays/played travel/travels/traveled "
    "jump/jumps/jumped arrive/arrives/arrived stay/stays/stayed fall/falls/fell "
    "climb/climbs/climbed hurry/hurries/hurried shiver/shivers/shivered whistle/whistles/whistled"
).split()
_PREPOSITIONS = "in on near behind under beside across into from past above below around".split()
_TIMES = (
    "yesterday|today|tomorrow|last night|this morning|every day|in the evening|after lunch|"
    "before dinner|at noon|on monday|on tuesday|on wednesday|on thursday|on friday|"
    "on saturday|on sunday|last week|next year|in the winter|in the summer|at midnight|"
    "once again|later that day|every morning"
).split("|")
_MANNER = "quickly slowly quietly happily carefully suddenly loudly calmly".split()
_FREQUENCY = "always never often sometimes usually rarely".split()
_SMALL_NUMBERS = "two three four five six seven eight nine ten eleven twelve twenty".split()
_FEELINGS = "think know hope believe heard said".split()


def _pairs(entries: tuple[str, ...] | list[str]) -> list[tuple[str, ...]]:
    return [tuple(e.split("/")) for e in entries]


_NOUNS = _pairs(_PEOPLE + _ANIMALS + _THINGS + _PLACES)
_PERSONS = _pairs(_PEOPLE)
_OBJECTS = _pairs(_ANIMALS + _THINGS)
_LOCATIONS = _pairs(_PLACES + _THINGS[:20])
_ANIMATE = _pairs(_PEOPLE + _ANIMALS)
_VT = _pairs(_TRANSITIVE)
_VI = _pairs(_INTRANSITIVE)

# ----------------------------------------------------------------- closed domain vocabulary

_ROOMS = (
    "kitchen|bedroom|bathroom|living room|dining room|garage|office|hallway|basement|"
    "garden|nursery|attic"
).split("|")
_DEVICES = "lights|lamp|fan|heater|television|radio|oven|coffee machine|dishwasher|air conditioner".split("|")
_OPENABLES = "garage door|front door|back door|blinds|curtains|windows|gate".split("|")
_GENRES = "jazz|rock|classical|country|pop|relaxing|dance|folk".split("|")
_CITIES = "london|paris|tokyo|boston|berlin|sydney|chicago|dublin|madrid|toronto".split("|")
_WEEKDAYS = "today|tomorrow|on monday|on tuesday|on wednesday|on thursday|on friday|on saturday|on sunday".split("|")
_DAYS = _WEEKDAYS + "tonight|this weekend|this afternoon|next week".split("|")
_TASKS = (
    "call mom|buy milk|water the plants|feed the cat|take out the trash|walk the dog|"
    "pay the bills|check the mail|pick up the kids|charge my phone|lock the door|"
    "start the laundry|book a table|send the report|take my medicine"
).split("|")
_ITEMS = (
    "milk|eggs|bread|butter|cheese|apples|bananas|coffee|tea|rice|pasta|tomatoes|"
    "onions|chicken|soap|sugar|flour|yogurt"
).split("|")
_CONTACTS = "mom|dad|grandma|grandpa|my sister|my brother|the office|the doctor|anna|peter".split("|")
_UNITS = "seconds|minutes|hours".split("|")
_TIMER_RANGE = {"seconds": (10, 90), "minutes": (2, 90), "hours": (2, 12)}


def _time_words(rng: random.Random, *, part_of_day: bool = True) -> str:
    """A clock time in words ("seven thirty", "half past two", "noon"), maybe "in the morning"."""
    style = rng.random()
    if style < 0.1:
        return rng.choice(("noon", "midnight"))
    hour = rng.randint(1, 12)
    if style < 0.25:
        return f"half past {number_to_words(hour)}" if rng.random() < 0.5 else f"quarter past {number_to_words(hour)}"
    minute = rng.choice((0, 0, 5, 10, 15, 20, 25, 30, 30, 35, 40, 45, 45, 50, 55))
    words = _time_to_words(hour, minute)
    if part_of_day and rng.random() < 0.4:
        words += " " + rng.choice(("in the morning", "in the evening", "at night", "in the afternoon"))
    return words


def _duration_words(rng: random.Random) -> str:
    unit = rng.choice(_UNITS)
    return f"{number_to_words(rng.randint(*_TIMER_RANGE[unit]))} {unit}"


def _digits_words(rng: random.Random, n: int) -> str:
    return " ".join(_ONES[rng.randint(0, 9)] for _ in range(n))


# --------------------------------------------------------------------------- templates

Template = Callable[[random.Random], str]


def _a(word: str) -> str:
    first = word.split()[0]
    return ("an " if first[0] in "aeiou" or first in _ADJ_THAT_NEED_AN else "a ") + word


def _np(rng: random.Random, nouns=None, *, article: str = "the", adj_prob: float = 0.5, plural: bool = False) -> str:
    """Noun phrase: "the old man", "a red box", "three boxes"."""
    noun = rng.choice(nouns or _NOUNS)
    word = noun[1] if plural else noun[0]
    if rng.random() < adj_prob:
        word = rng.choice(_ADJECTIVES) + " " + word
    if plural:
        return ("the " + word) if article == "the" else word
    return _a(word) if article == "a" else "the " + word


def _pp(rng: random.Random) -> str:
    return rng.choice(_PREPOSITIONS) + " " + _np(rng, _LOCATIONS, adj_prob=0.3)


def _maybe(rng: random.Random, p: float, s: str) -> str:
    return (" " + s) if rng.random() < p else ""


def _subject(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.4:
        return rng.choice(_NAMES)
    if r < 0.55:
        return rng.choice(("i", "we", "they", "she", "he", "you"))
    return _np(rng, _ANIMATE)


_GENERAL: tuple[Template, ...] = (
    lambda r: f"{_subject(r)} {r.choice(_VT)[2]} {_np(r, _OBJECTS, article='a')}{_maybe(r, 0.6, _pp(r))}.",
    lambda r: f"the {r.choice(_ADJECTIVES)} {r.choice(_NOUNS)[0]} {r.choice(_VT)[2]} {_np(r)}.",
    lambda r: f"{_subject(r)} {r.choice(_VI)[2]} {_pp(r)} {r.choice(_TIMES)}.",
    lambda r: f"we will {r.choice(_VT)[0]} {_np(r, _OBJECTS)} {r.choice(_TIMES)}.",
    lambda r: f"do you {r.choice(_VT)[0]} {_np(r, _OBJECTS, adj_prob=0.7)}?",
    lambda r: f"{r.choice(_NAMES)} and {r.choice(_NAMES)} {r.choice(_VI)[2]} {_pp(r)}.",
    lambda r: f"there is {_np(r, _OBJECTS, article='a', adj_prob=0.8)} {_pp(r)}.",
    lambda r: f"the {r.choice(_NOUNS)[1]} were very {r.choice(_ADJECTIVES)}{_maybe(r, 0.5, r.choice(_TIMES))}.",
    lambda r: f"i {r.choice(_FEELINGS)} the {r.choice(_NOUNS)[0]} {r.choice(_VT)[1]} {_np(r, _OBJECTS, article=r.choice(('a', 'the')))}.",
    lambda r: f"please {r.choice(_VT)[0]} {_np(r, _OBJECTS)} {_pp(r)}.",
    lambda r: f"{r.choice(_NAMES)} could not {r.choice(_VT)[0]} the {r.choice(_OBJECTS)[0]} because it was too {r.choice(_ADJECTIVES)}.",
    lambda r: f"why did the {r.choice(_NOUNS)[0]} {r.choice(_VI)[0]} {_pp(r)}?",
    lambda r: f"the {r.choice(_NOUNS)[0]} was {r.choice(_ADJECTIVES)} and the {r.choice(_NOUNS)[0]} was {r.choice(_ADJECTIVES)}.",
    lambda r: f"{r.choice(_NAMES)} {r.choice(_VI)[2]} {r.choice(_MANNER)} {_pp(r)}.",
    lambda r: f"have you ever seen {_np(r, _OBJECTS, article='a', adj_prob=0.9)}?",
    lambda r: f"{r.choice(_TIMES)} {_subject(r)} {r.choice(_VT)[2]} {r.choice(_SMALL_NUMBERS)} {_np(r, _OBJECTS, article='', plural=True, adj_prob=0.3)}.",
    lambda r: f"don't {r.choice(_VT)[0]} the {r.choice(_OBJECTS)[0]}{_maybe(r, 0.5, _pp(r))}.",
    lambda r: f"i can't find my {r.choice(_ADJECTIVES)} {r.choice(_OBJECTS)[0]}{_maybe(r, 0.5, r.choice(_TIMES))}.",
    lambda r: f"it's {_np(r, _NOUNS, article='a', adj_prob=1.0)}{_maybe(r, 0.5, _pp(r))}.",
    lambda r: f"the {r.choice(_PEOPLE).split('/')[0]}'s {r.choice(_OBJECTS)[0]} is {r.choice(_ADJECTIVES)}{_maybe(r, 0.4, _pp(r))}.",
    lambda r: f"{r.choice(_NAMES)} {r.choice(_VT)[1]} {_np(r, _OBJECTS, plural=True, adj_prob=0.4)} {r.choice(_TIMES)}.",
    lambda r: f"she told me that {_np(r, _PERSONS)} {r.choice(_VI)[2]} {r.choice(_MANNER)}.",
    lambda r: f"my {r.choice(_PEOPLE).split('/')[0]} {r.choice(_VI)[2]} {_pp(r)}{_maybe(r, 0.4, r.choice(_TIMES))}.",
    lambda r: f"they {r.choice(_FREQUENCY)} {r.choice(_VT)[0]} {_np(r, _OBJECTS, plural=True, adj_prob=0.3)}.",
    lambda r: f"{r.choice(_NAMES)} {r.choice(_FREQUENCY)} {r.choice(_VI)[1]} {_pp(r)}{_maybe(r, 0.3, 'in the ' + r.choice(('morning', 'evening')))}.",
)

_DOMAIN: tuple[Template, ...] = (
    lambda r: f"turn {r.choice(('on', 'off'))} the {r.choice(_DEVICES)} in the {r.choice(_ROOMS)}.",
    lambda r: f"turn the {r.choice(_DEVICES)} {r.choice(('on', 'off'))} in the {r.choice(_ROOMS)}.",
    lambda r: f"please switch {r.choice(('on', 'off'))} the {r.choice(_ROOMS)} {r.choice(_DEVICES)}.",
    lambda r: f"dim the {r.choice(_ROOMS)} lights to {number_to_words(r.randrange(10, 100, 10))} percent.",
    lambda r: f"set the brightness to {number_to_words(r.randrange(5, 101, 5))} percent.",
    lambda r: f"set a timer for {_duration_words(r)}.",
    lambda r: f"start a {number_to_words(r.randint(2, 60))} minute timer{_maybe(r, 0.3, 'for the ' + r.choice(('pasta', 'rice', 'eggs', 'tea', 'cake')))}.",
    lambda r: f"set an alarm for {_time_words(r)}.",
    lambda r: f"wake me up at {_time_words(r, part_of_day=False)} {r.choice(_WEEKDAYS)}.",
    lambda r: f"set the temperature to {number_to_words(r.randint(15, 28))} degrees{_maybe(r, 0.5, 'in the ' + r.choice(_ROOMS))}.",
    lambda r: f"make it {r.choice(('warmer', 'cooler'))} in the {r.choice(_ROOMS)} please.",
    lambda r: f"play some {r.choice(_GENRES)} music in the {r.choice(_ROOMS)}.",
    lambda r: f"set the volume to {number_to_words(r.randint(1, 10))}{_maybe(r, 0.4, 'in the ' + r.choice(_ROOMS))}.",
    lambda r: f"turn the volume {r.choice(('up', 'down'))} in the {r.choice(_ROOMS)}.",
    lambda r: f"what time is it in {r.choice(_CITIES)}?",
    lambda r: f"what is the weather like in {r.choice(_CITIES)} {r.choice(_DAYS)}?",
    lambda r: f"will it rain in {r.choice(_CITIES)} {r.choice(_DAYS)}?",
    lambda r: f"remind me to {r.choice(_TASKS)} at {_time_words(r)}.",
    lambda r: f"remind me to {r.choice(_TASKS)} {r.choice(_DAYS)}.",
    lambda r: f"call {r.choice(_CONTACTS)} {r.choice(_WEEKDAYS)} at {_time_words(r)}.",
    lambda r: f"dial {_digits_words(r, r.choice((4, 7)))}.",
    lambda r: f"add {r.choice(_ITEMS)} and {r.choice(_ITEMS)} to the shopping list.",
    lambda r: f"{r.choice(('open', 'close'))} the {r.choice(_OPENABLES)}{_maybe(r, 0.4, 'at ' + _time_words(r))}.",
    lambda r: f"lock the {r.choice(_OPENABLES)} and turn off the {r.choice(_DEVICES)}.",
    lambda r: f"how many {r.choice(_UNITS)} are left on the {r.choice(('timer', 'oven timer', 'kitchen timer'))}?",
    lambda r: f"the code is {_digits_words(r, r.randint(4, 6))}.",
    lambda r: f"move the meeting to {_time_words(r, part_of_day=False)} {r.choice(_WEEKDAYS)}.",
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
