"""Offline speech synthesis with eSpeak NG: text -> float32 wave at 16 kHz.

Backends, tried in this order:

* ``library``: ``libespeak-ng.so`` and its data from the PyPI package ``espeakng-loader``,
  driven through ctypes (``espeak_Initialize`` in synchronous mode, a synth callback that
  collects 16-bit samples at the engine's 22050 Hz).
* ``cli``: Debian's ``espeak-ng`` program (``--stdout`` WAV), used only when the library
  cannot be loaded.

Determinism. The library keeps state between utterances (the pitch "flutter" phase and
other statics survive ``espeak_Terminate``), so the n-th utterance of a process depends on
the ones before it: the same text can come out a few hundred samples longer or shorter.
With ``isolate=True`` (the default) a small server process (``espeak_engine.py`` run as a
script: ctypes, numpy and the engine, nothing else) initialises the engine once and forks a child
per utterance, so every utterance starts from the same never-used engine state and depends
only on its own arguments, whichever worker renders it and in whatever order. Forking the
small server is much cheaper than forking a process that holds torch. The CLI backend
runs a fresh program per utterance and is isolated anyway. Without ``os.fork`` (Windows)
the server renders in-process: same results per server, not across histories.

The engine is not thread-safe: each process has one engine (and at most one server),
shared by all ``Synthesizer`` objects and serialised by a lock. For parallelism use
several processes (``multiprocessing``); a forked worker starts its own server.

    synth = Synthesizer()
    wave = synth.synthesize("set a timer for five minutes", voice="en-us", variant="f3",
                            rate=160, pitch=55)   # (S,) float32 in [-1, 1], 16 kHz
"""

from __future__ import annotations

import atexit
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import soxr

from wav2vec2_lite.corpus.espeak_engine import (
    HEADER,
    SERVER_SCRIPT,
    Library,
    Request,
    SynthesisError,
    voice_files,
)

__all__ = [
    "SynthesisError",
    "Synthesizer",
    "ENGLISH_VOICES",
    "VARIANTS",
    "SAMPLE_RATE",
    "VOICE_ALIASES",
]

SAMPLE_RATE = 16_000  # output rate of Synthesizer.synthesize

# English voices of eSpeak NG 1.52 (identifiers as ``-v`` takes them; ``en-gb`` is an alias of
# the voice file ``en``). en-shaw (Shavian script) is left out.
ENGLISH_VOICES = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
VOICE_ALIASES = {"en-gb": "en"}


RATE_RANGE = (80, 450)  # words per minute the engine accepts
PITCH_RANGE = (0, 99)


# ----------------------------------------------------------------------------- the engines


def _read_exact(f, n: int) -> bytes:
    buf = f.read(n)
    if buf is None or len(buf) != n:
        raise EOFError(f"expected {n} bytes, got {0 if buf is None else len(buf)}")
    return buf


class _Server:
    """Client side of ``espeak_engine._serve``: one server process per client process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER_SCRIPT), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        line = self.proc.stdout.readline()
        try:
            hello = json.loads(line)
        except json.JSONDecodeError:
            hello = {"ok": False, "error": f"no handshake from the server (got {line[:200]!r})"}
        if not hello.get("ok"):
            self.close()
            raise SynthesisError(f"eSpeak NG server failed to start: {hello.get('error')}")
        self.native_rate = int(hello["native_rate"])
        self.version = hello["version"]
        self.voices, self.variants = set(hello["voices"]), set(hello["variants"])
        self.lock = threading.Lock()

    def render(self, req: Request) -> np.ndarray:
        try:
            self.proc.stdin.write((json.dumps(asdict(req)) + "\n").encode())
            self.proc.stdin.flush()
            status, n = HEADER.unpack(_read_exact(self.proc.stdout, HEADER.size))
            payload = _read_exact(self.proc.stdout, n)
        except (OSError, EOFError, struct.error) as e:
            raise SynthesisError(f"eSpeak NG server died ({e}); exit code {self.proc.poll()}") from e
        if status != 0:
            raise SynthesisError(payload.decode(errors="replace"))
        return np.frombuffer(payload, dtype="<i2").astype(np.int16)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # EOF ends the server loop
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()


class _Cli:
    """Debian's ``espeak-ng`` program; each utterance is a fresh process."""

    def __init__(self, exe: str) -> None:
        self.exe = exe
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
        # "eSpeak NG text-to-speech: 1.51  Data at: /usr/lib/x86_64-linux-gnu/espeak-ng-data"
        version, data = re.search(r"(\d+\.\d+(?:\.\d+)?)", out), re.search(r"Data at:\s*(\S+)", out)
        self.version = version.group(1) if version else "?"
        self.native_rate = 22050
        self.voices = self.variants = None  # unknown: the program falls back to a default voice
        if data and Path(data.group(1)).is_dir():
            self.voices, self.variants = voice_files(Path(data.group(1)))
        self.lock = threading.Lock()

    def render(self, req: Request) -> np.ndarray:
        cmd = [
            self.exe, "-v", req.voice, "-s", str(req.rate), "-p", str(req.pitch), "-g", str(req.word_gap),
            "-a", str(req.volume), "-b", "1",
            "-z", "--stdout", req.text,  # -z: no final pause, as the library
        ]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, check=False)
        if out.returncode != 0 or not out.stdout:
            raise SynthesisError(
                f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.decode(errors='replace')}"
            )
        wave, sr = sf.read(io.BytesIO(out.stdout), dtype="int16")
        self.native_rate = int(sr)
        return wave.reshape(-1)


# One engine of each kind per process, created on first use.
_ENGINES: dict[str, Library | _Server | _Cli] = {}
_ENGINES_PID = os.getpid()
_ENGINES_LOCK = threading.Lock()


def _engine(kind: Literal["server", "library", "cli"]) -> Library | _Server | _Cli:
    global _ENGINES_PID
    with _ENGINES_LOCK:
        if _ENGINES_PID != os.getpid():  # forked: the parent's server pipes are not ours
            _ENGINES.clear()
            _ENGINES_PID = os.getpid()
        if kind not in _ENGINES:
            if kind == "server":
                _ENGINES[kind] = _Server()
            elif kind == "library":
                _ENGINES[kind] = Library()
            else:
                exe = shutil.which("espeak-ng")
                if exe is None:
                    raise SynthesisError("no 'espeak-ng' program on PATH (apt-get install espeak-ng)")
                _ENGINES[kind] = _Cli(exe)
        return _ENGINES[kind]


@atexit.register
def _close_servers() -> None:
    if _ENGINES_PID == os.getpid():
        for eng in _ENGINES.values():
            if isinstance(eng, _Server):
                eng.close()


class Synthesizer:
    """Text -> float32 wave at ``sample_rate`` (16 kHz) with eSpeak NG.

    Args:
        sample_rate: output rate; the engine's 22050 Hz is resampled with ``soxr`` (HQ).
        backend: ``"auto"`` (library, else the CLI), ``"library"`` or ``"cli"``.
        isolate: library backend only: render every utterance from the same fresh engine
            state (see the module docstring), so results do not depend on earlier calls.
    """

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        *,
        backend: Literal["auto", "library", "cli"] = "auto",
        isolate: bool = True,
    ) -> None:
        if backend not in ("auto", "library", "cli"):
            raise ValueError(f"backend must be 'auto', 'library' or 'cli', found {backend!r}")
        self.sample_rate = int(sample_rate)
        self.isolate = bool(isolate)
        errors = []
        self._engine = None
        if backend in ("auto", "library"):
            try:
                self._engine = _engine("server" if self.isolate else "library")
            except SynthesisError as e:
                errors.append(f"library: {e}")
        if self._engine is None and backend in ("auto", "cli"):
            try:
                self._engine = _engine("cli")
            except SynthesisError as e:
                errors.append(f"cli: {e}")
        if self._engine is None:
            raise SynthesisError("no eSpeak NG backend available: " + "; ".join(errors))

    @property
    def backend(self) -> str:
        return "cli" if isinstance(self._engine, _Cli) else "library"

    @property
    def native_rate(self) -> int:
        return self._engine.native_rate

    @property
    def version(self) -> str:
        """eSpeak NG version string, e.g. ``"1.52.0"``."""
        return self._engine.version

    def voice_name(self, voice: str, variant: str | None = None) -> str:
        """The eSpeak name for ``voice`` (+ ``variant``), checked against the installed data."""
        v = voice.lower()
        v = VOICE_ALIASES.get(v, v)
        eng = self._engine
        if eng.voices is not None and v not in eng.voices:
            raise SynthesisError(
                f"unknown eSpeak NG voice {voice!r}; English voices: {', '.join(ENGLISH_VOICES)}"
            )
        if variant:
            if eng.variants is not None and variant not in eng.variants:
                raise SynthesisError(f"unknown eSpeak NG variant {variant!r}; e.g. {', '.join(VARIANTS)}")
            v = f"{v}+{variant}"
        return v

    def synthesize_native(
        self,
        text: str,
        *,
        voice: str = "en-us",
        variant: str | None = None,
        rate: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
        word_gap: int = 0,
        volume: int = 100,
        seed: int = 0,
    ) -> np.ndarray:
        """int16 samples at ``native_rate`` (22050 Hz), as the engine produced them.

        ``voice``: an English voice (``ENGLISH_VOICES``); ``variant``: ``m1..m7``, ``f1..f5``
        or None; ``rate`` in words per minute; ``pitch`` and ``pitch_range`` 0..99;
        ``word_gap`` extra pause between words in units of 10 ms; ``volume`` 0..200;
        ``seed`` seeds the engine's noise source (breathy variants).
        """
        if not text.strip():
            raise ValueError("text to synthesize is empty")
        if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
            raise ValueError(f"rate must be {RATE_RANGE[0]}..{RATE_RANGE[1]} words per minute, found {rate}")
        for name, value in (("pitch", pitch), ("pitch_range", pitch_range)):
            if not PITCH_RANGE[0] <= value <= PITCH_RANGE[1]:
                raise ValueError(f"{name} must be {PITCH_RANGE[0]}..{PITCH_RANGE[1]}, found {value}")
        if word_gap < 0 or not 0 <= volume <= 200:
            raise ValueError(f"need word_gap >= 0 and volume 0..200, found {word_gap}, {volume}")
        req = Request(" ".join(text.split()), self.voice_name(voice, variant), int(rate), int(pitch),
                       int(pitch_range), int(word_gap), int(volume), int(seed))  # fmt: skip
        eng = self._engine
        with eng.lock:
            samples = eng.render(req)
        if samples.size == 0:
            raise SynthesisError(f"eSpeak NG produced no audio for {text!r} ({req.voice})")
        return samples

    def synthesize(self, text: str, **kwargs) -> np.ndarray:
        """float32 wave in [-1, 1] at ``sample_rate``; keyword arguments as ``synthesize_native``."""
        samples = self.synthesize_native(text, **kwargs)
        wave = samples.astype(np.float32) / 32768.0
        if self.native_rate != self.sample_rate:
            wave = soxr.resample(wave, self.native_rate, self.sample_rate, quality="HQ")
        return np.ascontiguousarray(wave, dtype=np.float32)
