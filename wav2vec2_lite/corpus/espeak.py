"""Offline speech synthesis with eSpeak NG: text -> float32 wave at 16 kHz.

Two backends, tried in this order:

* ``library``: ``libespeak-ng.so`` and its data from the PyPI package ``espeakng-loader``,
  driven through ctypes (``espeak_Initialize`` in synchronous mode, a synth callback that
  collects 16-bit samples at the engine's 22050 Hz).
* ``cli``: Debian's ``espeak-ng`` program (``--stdout`` WAV), used only when the library
  cannot be loaded.

Determinism. The library keeps state between utterances (the pitch "flutter" phase and
other statics survive ``espeak_Terminate``), so the n-th utterance of a process depends on
the n-1 before it: the same text can come out a few hundred samples longer or shorter.
With ``isolate=True`` (the default where ``os.fork`` exists) every utterance is rendered in
a short-lived child forked from a process whose engine was initialised but never spoke, so
an utterance depends only on its own arguments, whichever worker renders it and in
whatever order. The CLI backend runs a fresh process per utterance and is isolated anyway.

The engine is not thread-safe; it is initialised once per process and calls are
serialised by a lock. Run several processes (``multiprocessing``) for parallelism.

    synth = Synthesizer()
    wave = synth.synthesize("set a timer for five minutes", voice="en-us", variant="f3",
                            rate=160, pitch=55)   # (S,) float32 in [-1, 1], 16 kHz
"""

from __future__ import annotations

import ctypes
import io
import os
import shutil
import struct
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soxr

__all__ = [
    "SynthesisError",
    "Synthesizer",
    "ENGLISH_VOICES",
    "VARIANTS",
    "SAMPLE_RATE",
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
_VOICE_ALIASES = {"en-gb": "en"}

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 0x02
_CHARS_UTF8 = 1
_P_RATE, _P_VOLUME, _P_PITCH, _P_RANGE, _P_WORDGAP = 1, 2, 3, 4, 7
_EE_OK = 0

RATE_RANGE = (80, 450)  # words per minute the engine accepts
PITCH_RANGE = (0, 99)


class SynthesisError(RuntimeError):
    """The engine could not be loaded, rejected a voice, or failed to render text."""


@dataclass(frozen=True)
class _Request:
    text: str
    voice: str  # espeak name, e.g. "en-us+f3"
    rate: int
    pitch: int
    pitch_range: int
    word_gap: int
    volume: int
    seed: int


class _Engine:
    """libespeak-ng loaded and initialised once in this process (see module docstring)."""

    _CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as e:
            raise SynthesisError(
                "espeakng-loader is not installed (pip install 'wav2vec2_lite[synth]')"
            ) from e
        lib_path, data_path = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
        try:
            lib = ctypes.CDLL(lib_path)
        except OSError as e:
            raise SynthesisError(f"cannot load {lib_path}: {e}") from e
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [self._CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)
        if rate <= 0:
            raise SynthesisError(f"espeak_Initialize failed (returned {rate}); data folder {data_path}")
        self.lib = lib
        self.libc = ctypes.CDLL(None)  # the engine also draws from libc rand()
        self.native_rate = int(rate)
        self.version = lib.espeak_Info(None).decode()
        self.data_path = Path(data_path)
        self._chunks: list[np.ndarray] = []
        self._callback = self._CALLBACK(self._on_audio)  # keep a reference: ctypes does not
        lib.espeak_SetSynthCallback(self._callback)
        # Load the English dictionary once here, so forked children inherit it.
        if lib.espeak_SetVoiceByName(b"en-us") != _EE_OK:
            raise SynthesisError(f"eSpeak NG in {data_path} has no 'en-us' voice")
        self.voices = self._list_voice_files()
        self.variants = {p.name for p in (self.data_path / "voices" / "!v").iterdir()}
        self.lock = threading.Lock()

    def _list_voice_files(self) -> set[str]:
        lang = self.data_path / "lang"
        return {p.name.lower() for p in lang.rglob("*") if p.is_file()}

    def _on_audio(self, wav, n, events) -> int:  # noqa: ARG002 - ctypes signature
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = continue

    def render(self, req: _Request) -> np.ndarray:
        """Synthesize in this process: int16 samples at ``native_rate``. Caller holds ``lock``."""
        lib = self.lib
        lib.espeak_ng_SetRandSeed(req.seed)  # breathy variants (f1..f5) add random noise
        self.libc.srand(ctypes.c_uint(req.seed & 0xFFFFFFFF))
        rc = lib.espeak_SetVoiceByName(req.voice.encode())
        if rc != _EE_OK:
            raise SynthesisError(f"eSpeak NG rejected voice {req.voice!r} (error {rc})")
        for param, value in (
            (_P_RATE, req.rate), (_P_PITCH, req.pitch), (_P_RANGE, req.pitch_range),
            (_P_WORDGAP, req.word_gap), (_P_VOLUME, req.volume),
        ):  # fmt: skip
            lib.espeak_SetParameter(param, int(value), 0)
        text = req.text.encode("utf-8")
        self._chunks = []
        rc = lib.espeak_Synth(text, len(text) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
        chunks, self._chunks = self._chunks, []
        if rc != _EE_OK:
            raise SynthesisError(f"espeak_Synth failed (error {rc}) for {req.text!r}")
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)

    def render_isolated(self, req: _Request) -> np.ndarray:
        """``render`` in a forked child, so no state carries over between utterances."""
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: render, send "status, length, payload", exit without cleanup
            status, payload = 1, b""
            try:
                os.close(read_fd)
                payload = self.render(req).astype("<i2").tobytes()
                status = 0
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                payload = f"{type(e).__name__}: {e}".encode()
            finally:
                try:
                    with os.fdopen(write_fd, "wb") as f:
                        f.write(struct.pack("<qq", status, len(payload)))
                        f.write(payload)
                finally:
                    os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as f:
            buf = f.read()
        _, wait_status = os.waitpid(pid, 0)
        if len(buf) < 16:
            raise SynthesisError(
                f"synthesis child exited with status {wait_status} without a result for {req.text!r}"
            )
        status, n = struct.unpack("<qq", buf[:16])
        payload = buf[16 : 16 + n]
        if status != 0 or len(payload) != n:
            raise SynthesisError(payload.decode(errors="replace") or f"synthesis child failed for {req.text!r}")
        return np.frombuffer(payload, dtype="<i2").astype(np.int16)


class _CliEngine:
    """Debian's ``espeak-ng`` program; each utterance is a fresh process."""

    def __init__(self, exe: str) -> None:
        self.exe = exe
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
        self.version = (out.stdout.split() + ["?", "?", "?"])[2] if out.returncode == 0 else "?"
        self.native_rate = 22050
        self.voices = None  # validated by the program itself
        self.variants = None
        self.lock = threading.Lock()

    def render(self, req: _Request) -> np.ndarray:
        import soundfile as sf

        cmd = [
            self.exe, "-v", req.voice, "-s", str(req.rate), "-p", str(req.pitch),
            "-g", str(req.word_gap), "-a", str(req.volume), "-b", "1", "--stdout", req.text,
        ]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, check=False)
        if out.returncode != 0 or not out.stdout:
            raise SynthesisError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.decode(errors='replace')}")
        wave, sr = sf.read(io.BytesIO(out.stdout), dtype="int16")
        self.native_rate = int(sr)
        return wave.reshape(-1)

    render_isolated = render


_ENGINE: _Engine | _CliEngine | None = None
_ENGINE_PID: int | None = None
_ENGINE_LOCK = threading.Lock()


def _engine(backend: str) -> _Engine | _CliEngine:
    """The process-wide engine, created on first use (``backend``: auto, library or cli)."""
    global _ENGINE, _ENGINE_PID
    with _ENGINE_LOCK:
        if _ENGINE is not None and _ENGINE_PID != os.getpid():
            # Inherited through fork (a multiprocessing worker): the loaded library and its
            # state are this process's copy; only the lock may have been held by another thread.
            _ENGINE.lock, _ENGINE_PID = threading.Lock(), os.getpid()
        if _ENGINE is not None:
            if backend == "auto" or (backend == "library") == isinstance(_ENGINE, _Engine):
                return _ENGINE
        errors = []
        if backend in ("auto", "library"):
            try:
                _ENGINE, _ENGINE_PID = _Engine(), os.getpid()
                return _ENGINE
            except SynthesisError as e:
                errors.append(f"library: {e}")
        if backend in ("auto", "cli"):
            exe = shutil.which("espeak-ng")
            if exe:
                _ENGINE, _ENGINE_PID = _CliEngine(exe), os.getpid()
                return _ENGINE
            errors.append("cli: no 'espeak-ng' program on PATH (apt-get install espeak-ng)")
        raise SynthesisError("no eSpeak NG backend available: " + "; ".join(errors))


class Synthesizer:
    """Text -> float32 wave at ``sample_rate`` (16 kHz) with eSpeak NG.

    Args:
        sample_rate: output rate; the engine's 22050 Hz is resampled with ``soxr``.
        backend: ``"auto"`` (library, else CLI), ``"library"`` or ``"cli"``.
        isolate: render each utterance in a forked child (library backend; see the module
            docstring). Needed for outputs that do not depend on earlier utterances.

    All instances in a process share one engine; use one process per parallel worker.
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
        self._engine = _engine(backend)
        self.isolate = bool(isolate) and hasattr(os, "fork")

    @property
    def backend(self) -> str:
        return "library" if isinstance(self._engine, _Engine) else "cli"

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
        v = _VOICE_ALIASES.get(v, v)
        eng = self._engine
        if eng.voices is not None and v not in eng.voices:
            raise SynthesisError(f"unknown eSpeak NG voice {voice!r}; English voices: {', '.join(ENGLISH_VOICES)}")
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
        """int16 samples at ``native_rate`` (22050 Hz), exactly as the engine produced them.

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
        if word_gap < 0:
            raise ValueError(f"word_gap (units of 10 ms) must be >= 0, found {word_gap}")
        req = _Request(text, self.voice_name(voice, variant), int(rate), int(pitch), int(pitch_range),
                       int(word_gap), int(volume), int(seed))  # fmt: skip
        eng = self._engine
        with eng.lock:
            samples = eng.render_isolated(req) if self.isolate else eng.render(req)
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
