"""Character tokenizer for CTC fine-tuning (fairseq ``dict.ltr.txt`` / HF ``vocab.json``).

Vocabulary layout (as transformers' ``Wav2Vec2CTCTokenizer`` for fairseq-derived models):
``["<pad>", "<s>", "</s>", "<unk>"] + dictionary symbols in file order``; index 0
(``<pad>``) is the CTC blank and ``|`` is the word delimiter. (fairseq's own ``Dictionary``
puts ``<s>`` at 0, its CTC blank, and ``<pad>`` at 1; checkpoint converters swap the two.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Literal

from wav2vec2_lite.data.manifest import read_dictionary

__all__ = ["TokenizerError", "CharTokenizer", "SPECIAL_TOKENS", "UnkPolicy"]

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
UnkPolicy = Literal["error", "map"]
"""A symbol outside the vocabulary: ``error``, or ``map`` it to ``<unk>`` (the ``data.unk`` key of a run)."""


class TokenizerError(ValueError):
    """Text cannot be tokenized (unknown symbol) or a vocabulary file is malformed."""


class CharTokenizer:
    """Maps ``.ltr`` symbols / text to ids and back.

    Args:
        symbols: dictionary symbols in order (specials among them are ignored).
        unk: ``"error"`` raises on a symbol outside the vocabulary; ``"map"`` maps it to ``<unk>``.
        uppercase: upper-case text in ``encode_text`` (fairseq letter dictionaries are upper case).
        word_delimiter: the symbol between words.
        source: where the vocabulary came from (for error messages).
    """

    def __init__(
        self,
        symbols: Iterable[str],
        *,
        unk: UnkPolicy = "error",
        uppercase: bool = True,
        word_delimiter: str = "|",
        source: str | None = None,
    ) -> None:
        if unk not in ("error", "map"):
            raise ValueError(f"unk must be 'error' or 'map', found {unk!r}")
        vocab = list(SPECIAL_TOKENS)
        for s in symbols:
            if s not in vocab:
                vocab.append(s)
        self.vocab: list[str] = vocab
        self.index: dict[str, int] = {s: i for i, s in enumerate(vocab)}
        self.unk = unk
        self.uppercase = uppercase
        self.word_delimiter = word_delimiter
        self.source = source or "the tokenizer vocabulary"
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = 0, 1, 2, 3
        self.blank_id = self.pad_id

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dictionary(cls, path: str | os.PathLike, **kwargs) -> "CharTokenizer":
        """Build from a fairseq ``dict.ltr.txt``."""
        return cls(read_dictionary(path), source=str(path), **kwargs)

    @classmethod
    def from_hf_vocab(cls, vocab: dict[str, int] | str | os.PathLike, **kwargs) -> "CharTokenizer":
        """Build from a transformers ``vocab.json`` dict (or its path); specials must be ids 0..3."""
        source = None
        if not isinstance(vocab, dict):
            source = str(vocab)
            vocab = json.loads(Path(vocab).read_text(encoding="utf-8"))
        ordered = [s for s, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
        if ordered[: len(SPECIAL_TOKENS)] != list(SPECIAL_TOKENS) or sorted(vocab.values()) != list(
            range(len(vocab))
        ):
            raise TokenizerError(
                f"{source or 'vocab'}: expected ids 0..{len(vocab) - 1} with {list(SPECIAL_TOKENS)} first, "
                f"found {ordered[: len(SPECIAL_TOKENS)]} first"
            )
        return cls(ordered[len(SPECIAL_TOKENS) :], source=source, **kwargs)

    def to_hf_vocab(self) -> dict[str, int]:
        """transformers ``vocab.json`` layout: ``{symbol: id}``."""
        return dict(self.index)

    def save(self, path: str | os.PathLike) -> None:
        """Save as JSON (vocab list plus options)."""
        data = {
            "vocab": self.vocab,
            "unk": self.unk,
            "uppercase": self.uppercase,
            "word_delimiter": self.word_delimiter,
        }
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CharTokenizer":
        """Load a tokenizer written by ``save``."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            vocab = data["vocab"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise TokenizerError(f"{path}: not a CharTokenizer JSON file ({e})") from None
        if list(vocab[: len(SPECIAL_TOKENS)]) != list(SPECIAL_TOKENS):
            raise TokenizerError(f"{path}: vocab must start with {list(SPECIAL_TOKENS)}, found {vocab[:4]}")
        return cls(
            vocab[len(SPECIAL_TOKENS) :],
            unk=data.get("unk", "error"),
            uppercase=data.get("uppercase", True),
            word_delimiter=data.get("word_delimiter", "|"),
            source=str(path),
        )

    # ------------------------------------------------------------------ encode / decode
    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def word_delimiter_id(self) -> int:
        i = self.index.get(self.word_delimiter)
        if i is None:
            raise TokenizerError(f"word delimiter {self.word_delimiter!r} is not in {self.source}")
        return i

    def _lookup(self, sym: str, context: str, pos: int) -> int:
        i = self.index.get(sym)
        if i is not None:
            return i
        if self.unk == "map":
            return self.unk_id
        cp = " ".join(f"U+{ord(c):04X}" for c in sym)
        raise TokenizerError(
            f"symbol {sym!r} ({cp}) at position {pos} of {context!r} is not in {self.source} "
            f"({len(self.vocab)} entries); fix the transcript, add it to the dictionary, "
            f"or map unknown symbols to <unk> with data.unk=map (CharTokenizer(unk='map') in Python)"
        )

    def encode_ltr(self, ltr: str) -> list[int]:
        """``"H E L L O | W O R L D |"`` -> ids (space-separated symbols)."""
        return [self._lookup(sym, ltr, i) for i, sym in enumerate(ltr.split())]

    def encode_text(self, text: str) -> list[int]:
        """Plain text -> ids: upper-cased, spaces -> ``|``, trailing ``|`` as in fairseq ``.ltr``.

        Equal to ``encode_ltr(text_to_ltr(text))``.
        """
        s = text.upper() if self.uppercase else text
        ids: list[int] = []
        in_word = False
        for pos, c in enumerate(s):
            if c.isspace():
                if in_word:
                    ids.append(self.word_delimiter_id)
                in_word = False
            else:
                ids.append(self._lookup(c, s, pos))
                in_word = True
        if in_word:
            ids.append(self.word_delimiter_id)
        return ids

    def decode(self, ids: Iterable[int], *, collapse_repeats: bool = False) -> str:
        """ids -> text: drops specials (and -100 padding), ``|`` -> space, whitespace collapsed.

        ``collapse_repeats=True`` first merges consecutive equal ids (greedy CTC decoding).
        """
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        out: list[str] = []
        prev = None
        n_special = len(SPECIAL_TOKENS)
        for i in ids:
            i = int(i)
            if collapse_repeats and i == prev:
                continue
            prev = i
            if i < n_special:  # specials, and negative padding such as -100
                continue
            if i >= len(self.vocab):
                raise TokenizerError(f"id {i} is outside the vocabulary of {len(self.vocab)} entries")
            sym = self.vocab[i]
            out.append(" " if sym == self.word_delimiter else sym)
        return " ".join("".join(out).split())

    def __repr__(self) -> str:
        return f"CharTokenizer({len(self.vocab)} entries, unk={self.unk!r}, source={self.source!r})"
