"""Transcript normalisation: numbers spelled out, then upper-case A-Z, apostrophes and single spaces.

The demo corpus's labels (``normalize_transcript``) and the number words its sentences use.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["normalize_transcript", "number_to_words", "time_to_words", "digits_to_words"]


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


def digits_to_words(digits: str) -> str:
    return " ".join(_ONES[int(d)] for d in digits)


def time_to_words(hours: int, minutes: int) -> str:
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
        lambda m: f" {time_to_words(int(m.group(1)), int(m.group(2)))} ",
        text,
    )
    text = re.sub(
        r"\b(\d+)(st|nd|rd|th)\b", lambda m: f" {_ordinal_words(int(m.group(1)))} ", text, flags=re.IGNORECASE
    )
    text = re.sub(
        r"\b(\d+)\.(\d+)\b",
        lambda m: f" {number_to_words(int(m.group(1)))} point {digits_to_words(m.group(2))} ",
        text,
    )
    text = re.sub(r"(\d)\s*%", r"\1 percent ", text)
    return re.sub(r"\d+", lambda m: f" {_integer_words(m.group())} ", text)


def _integer_words(digits: str) -> str:
    """A digit run as words: digit by digit if it has a leading zero or is very long (codes)."""
    if (digits[0] == "0" and len(digits) > 1) or len(digits) > 15:
        return digits_to_words(digits)
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
