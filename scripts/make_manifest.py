#!/usr/bin/env python
"""Write fairseq-style train.tsv / valid.tsv for a folder of audio files.

    python scripts/make_manifest.py AUDIO_DIR --dest OUT_DIR --ext wav --valid-percent 0.01 --seed 0

Optionally, ``--dict`` writes ``dict.ltr.txt`` from existing ``*.ltr`` label files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wav2vec2_lite.data.manifest import build_manifests, count_symbols, read_labels, write_dictionary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", metavar="AUDIO_DIR", help="folder scanned recursively for audio files")
    p.add_argument("--dest", required=True, help="output folder for train.tsv / valid.tsv")
    p.add_argument("--ext", default="wav", help="audio extension to look for (default: wav)")
    p.add_argument("--valid-percent", type=float, default=0.01,
                   help="fraction of files (0..1) put in valid.tsv (default: 0.01)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/valid split (default: 0)")
    p.add_argument("--path-must-contain", default=None, help="keep only files whose path contains this")
    p.add_argument("--dict", nargs="+", metavar="LTR", default=None,
                   help="also write DEST/dict.ltr.txt from these .ltr label files")
    args = p.parse_args(argv)
    counts = build_manifests(args.root, args.dest, ext=args.ext, valid_percent=args.valid_percent,
                             seed=args.seed, path_must_contain=args.path_must_contain)
    print(f"wrote {Path(args.dest) / 'train.tsv'} ({counts['train']} files)"
          + (f" and valid.tsv ({counts['valid']} files)" if args.valid_percent > 0 else ""))
    if args.dict:
        lines = [ln for f in args.dict for ln in read_labels(f)]
        write_dictionary(Path(args.dest) / "dict.ltr.txt", count_symbols(lines))
        print(f"wrote {Path(args.dest) / 'dict.ltr.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
