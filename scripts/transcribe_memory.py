#!/usr/bin/env python
"""Peak memory of ``w2v2-transcribe`` against a file's length: is it bounded by the window?

Builds a randomly initialised CTC model of the tiny config (conv 32..128, 4 x 256 layers, a
32-symbol vocabulary), writes noise files of each length (16 kHz, 16-bit PCM), and transcribes
each in a fresh interpreter through the ``w2v2-transcribe`` entry point (greedy decoding, default
``--chunk-s 30 --overlap-s 4``), reading that process's peak RSS (``VmHWM``). Prints one row per
length and the ratio of the longest to the shortest.

    OMP_NUM_THREADS=1 python scripts/transcribe_memory.py                     # 1 min and 2 h
    OMP_NUM_THREADS=1 python scripts/transcribe_memory.py --minutes 1 30 --keep /tmp/tm
    PYTHONPATH=/path/to/other/checkout python scripts/transcribe_memory.py    # another version

The package is the one this interpreter imports (``PYTHONPATH`` first), in the parent and in
the children alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

if __package__ in (None, ""):  # run as a file: the checkout's package unless PYTHONPATH names another
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from wav2vec2_lite import Wav2Vec2Config, Wav2Vec2ForCTC  # noqa: E402
from wav2vec2_lite.data.tokenizer import CharTokenizer  # noqa: E402
from wav2vec2_lite.serialization import save_model  # noqa: E402

SR = 16000
# one transcription in this fresh process through the console script's function, then its peak RSS
CHILD = r"""
import sys
import torch
torch.set_num_threads(1)
from wav2vec2_lite.cli import transcribe
try:
    transcribe(sys.argv[1:])
except SystemExit as e:
    if e.code:
        raise
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
sys.stderr.write("VmHWM_KIB %d\n" % int(hwm.split()[1]))
sys.stderr.write("PACKAGE %s\n" % sys.modules["wav2vec2_lite"].__file__)
"""


def build_model(folder: Path) -> None:
    tok = CharTokenizer(list("|ABCDEFGHIJKLMNOPQRSTUVWXYZ'"))  # 4 specials + 28 = 32 symbols
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(Wav2Vec2Config.tiny(vocab_size=len(tok)))
    with torch.no_grad():  # word breaks ("|", id 4): ~2.3 words a second on noise, about speech's rate
        model.lm_head.bias[4] = 1.0
    save_model(model, folder)
    tok.save(folder / "tokenizer.json")


def write_noise(path: Path, seconds: float) -> None:
    rng = np.random.default_rng(0)
    total = round(seconds * SR)
    with sf.SoundFile(path, "w", SR, 1, subtype="PCM_16") as f:
        for start in range(0, total, 60 * SR):
            f.write((rng.standard_normal(min(60 * SR, total - start)) * 0.1).astype(np.float32))


def measure(model: Path, wav: Path, extra: list[str]) -> dict:
    checkout = os.environ.get("PYTHONPATH") or str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": checkout}
    t0 = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), str(wav), "--json", *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=wav.parent,  # not the caller's folder: `python -c` would import a package found there first
    )
    seconds = time.perf_counter() - t0
    if run.returncode != 0:
        raise SystemExit(f"transcribing {wav} failed:\n{run.stderr[-3000:]}")
    kib = int(next(x for x in run.stderr.splitlines() if x.startswith("VmHWM_KIB")).split()[1])
    package = next(x for x in run.stderr.splitlines() if x.startswith("PACKAGE")).split(maxsplit=1)[1]
    row = json.loads(run.stdout)
    return {"peak_rss_mib": kib / 1024, "wall_s": seconds, "words": len(row["words"]), "package": package}


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 120], help="file lengths (minutes)")
    p.add_argument("--keep", type=Path, help="build the model and files here and keep them")
    p.add_argument("extra", nargs="*", help="more w2v2-transcribe options, after --")
    args = p.parse_args()
    if not Path("/proc/self/status").exists():
        raise SystemExit("reads VmHWM from /proc/self/status: Linux only")
    work = args.keep or Path(tempfile.mkdtemp(prefix="transcribe_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu_name()}; 1 thread")
    if not (work / "model" / "config.json").exists():
        build_model(work / "model")
    rows = {}
    for minutes in args.minutes:
        wav = work / f"{minutes:g}min.wav"
        if not wav.exists():
            write_noise(wav, minutes * 60)
        rows[minutes] = r = measure(work / "model", wav, args.extra)
        print(
            f"{minutes:>7g} min: peak RSS {r['peak_rss_mib']:7.1f} MiB  "
            f"({r['wall_s']:.0f} s, {r['words']} words; {Path(r['package']).parent})",
            flush=True,
        )
    short, long = rows[min(rows)], rows[max(rows)]
    print(f"ratio {max(rows):g} min / {min(rows):g} min: {long['peak_rss_mib'] / short['peak_rss_mib']:.3f}")
    if not args.keep:
        for f in sorted(work.rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        work.rmdir()


if __name__ == "__main__":
    main()
