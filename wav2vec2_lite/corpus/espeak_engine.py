"""libespeak-ng driven through ctypes, and the server loop that forks a fresh engine per utterance.

Run as a script by ``espeak.Synthesizer`` (``--serve``), so it imports only the standard library and numpy.
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["HEADER", "SERVER_SCRIPT", "Library", "Request", "SynthesisError", "voice_files"]

SERVER_SCRIPT = Path(__file__).resolve()  # run as ``python SERVER_SCRIPT --serve``
HEADER = struct.Struct("<qq")  # (status: 0 ok / 1 error, payload length) before each payload

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 0x02
_CHARS_UTF8 = 1
_P_RATE, _P_VOLUME, _P_PITCH, _P_RANGE, _P_WORDGAP = 1, 2, 3, 4, 7
_EE_OK = 0


class SynthesisError(RuntimeError):
    """The engine could not be loaded, rejected a voice, or failed to render text."""


@dataclass(frozen=True)
class Request:
    text: str
    voice: str  # espeak name, e.g. "en-us+f3"
    rate: int
    pitch: int
    pitch_range: int
    word_gap: int
    volume: int
    seed: int


def voice_files(data_path: Path) -> tuple[set[str], set[str]]:
    """(voice names, lower-case, as ``-v`` takes them; variant names) of an espeak-ng-data folder."""
    voices = {p.name.lower() for p in (data_path / "lang").rglob("*") if p.is_file()}
    variants_dir = data_path / "voices" / "!v"
    variants = {p.name for p in variants_dir.iterdir()} if variants_dir.is_dir() else set()
    return voices, variants


def _data_path() -> Path:
    try:
        import espeakng_loader  # optional: espeakng-loader (synth extra)
    except ImportError as e:
        raise SynthesisError("espeakng-loader is not installed (pip install 'wav2vec2_lite[synth]')") from e
    return Path(espeakng_loader.get_data_path())


class Library:
    """libespeak-ng loaded and initialised in this process; renders with whatever state it has."""

    _CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def __init__(self) -> None:
        import espeakng_loader  # optional: espeakng-loader (synth extra); _data_path says how to install it

        data_path = _data_path()
        lib_path = espeakng_loader.get_library_path()
        try:
            lib = ctypes.CDLL(lib_path)
        except OSError as e:
            raise SynthesisError(f"cannot load {lib_path}: {e}") from e
        c = ctypes
        lib.espeak_Initialize.argtypes = [c.c_int, c.c_int, c.c_char_p, c.c_int]
        lib.espeak_SetSynthCallback.argtypes = [self._CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [c.c_char_p]
        lib.espeak_SetParameter.argtypes = [c.c_int, c.c_int, c.c_int]
        lib.espeak_Synth.argtypes = [
            c.c_void_p,
            c.c_size_t,
            c.c_uint,
            c.c_int,
            c.c_uint,
            c.c_uint,
            c.c_void_p,
            c.c_void_p,
        ]
        lib.espeak_Info.argtypes = [c.c_void_p]
        lib.espeak_Info.restype = c.c_char_p
        lib.espeak_ng_SetRandSeed.argtypes = [c.c_long]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_path).encode(), 0)
        if rate <= 0:
            raise SynthesisError(f"espeak_Initialize failed (returned {rate}); data folder {data_path}")
        self.lib = lib
        self.libc = ctypes.CDLL(None)  # the engine also draws from libc rand()
        self.native_rate = int(rate)
        self.version = lib.espeak_Info(None).decode()
        self._chunks: list[bytes] = []
        self._callback = self._CALLBACK(self._on_audio)  # keep a reference: ctypes does not
        lib.espeak_SetSynthCallback(self._callback)
        # Load the English dictionary once here, so that forked children inherit it.
        if lib.espeak_SetVoiceByName(b"en-us") != _EE_OK:
            raise SynthesisError(f"eSpeak NG in {data_path} has no 'en-us' voice")
        self.voices, self.variants = map(sorted, voice_files(data_path))
        self.lock = threading.Lock()

    def _on_audio(self, wav, n, events) -> int:  # (short* wav, int n, espeak_EVENT* events)
        if n > 0:
            self._chunks.append(ctypes.string_at(wav, 2 * n))
        return 0  # 0 = continue

    def render_bytes(self, req: Request) -> bytes:
        """Little-endian int16 samples at ``native_rate``."""
        lib = self.lib
        lib.espeak_ng_SetRandSeed(req.seed)  # the breathy variants (f1..f5) add random noise
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
        data = b"".join(chunks)
        return data if sys.byteorder == "little" else np.frombuffer(data, "=i2").astype("<i2").tobytes()

    def render(self, req: Request) -> np.ndarray:
        return np.frombuffer(self.render_bytes(req), dtype="<i2").astype(np.int16)

    def info(self) -> dict:
        return {"native_rate": self.native_rate, "version": self.version, "voices": self.voices,
                "variants": self.variants}  # fmt: skip


# ----------------------------------------------------------------------------- the server


def _render_in_child(engine: Library, req: Request) -> tuple[int, bytes]:
    """Fork, render in the child, return its (status, payload); the engine state is untouched."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        status, payload = 1, b""
        try:
            os.close(read_fd)
            payload, status = engine.render_bytes(req), 0
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            payload = f"{type(e).__name__}: {e}".encode()
        finally:
            try:
                with os.fdopen(write_fd, "wb") as f:
                    f.write(HEADER.pack(status, len(payload)) + payload)
            finally:
                os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        buf = f.read()
    _, wait_status = os.waitpid(pid, 0)
    if len(buf) >= HEADER.size:
        status, n = HEADER.unpack(buf[: HEADER.size])
        if len(buf) == HEADER.size + n:
            return status, buf[HEADER.size :]
    return 1, f"synthesis child exited (wait status {wait_status}) without a result for {req.text!r}".encode()


def _serve() -> None:
    """Server loop: handshake JSON line, then per request line one framed int16 payload."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints of the C library must not corrupt the protocol
    try:
        engine = Library()
    except Exception as e:  # noqa: BLE001 - reported to the client
        out.write((json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}) + "\n").encode())
        out.flush()
        return
    out.write((json.dumps({"ok": True, **engine.info()}) + "\n").encode())
    out.flush()
    fork = hasattr(os, "fork")
    for line in sys.stdin.buffer:
        req = Request(**json.loads(line))
        if fork:
            status, payload = _render_in_child(engine, req)
        else:
            try:
                status, payload = 0, engine.render_bytes(req)
            except Exception as e:  # noqa: BLE001 - reported to the client
                status, payload = 1, f"{type(e).__name__}: {e}".encode()
        out.write(HEADER.pack(status, len(payload)) + payload)
        out.flush()


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    _serve()
