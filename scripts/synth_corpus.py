#!/usr/bin/env python
"""Synthesize the built-in demo corpus with eSpeak NG (offline). See docs/corpus.md.

python scripts/synth_corpus.py --out data/demo                 # default sizes, ~1-3 min on 2 cores
python scripts/synth_corpus.py --out data/full --full          # Libri-light sizes, 10 h unlabeled
python scripts/synth_corpus.py --out data/big --scale 4        # default sizes x 4
python scripts/synth_corpus.py --out data/demo --test-minutes 10 --seed 1
python scripts/synth_corpus.py --out data/science --full --diversity diverse   # varied unlabeled audio
"""

from __future__ import annotations

import argparse
import sys
import time

from wav2vec2_lite.corpus.augment import DIVERSITY_PRESETS
from wav2vec2_lite.corpus.build import SPLITS, build_corpus, corpus_minutes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data/demo", help="output folder (default: data/demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--workers", type=int, default=2, help="synthesis processes (output does not depend on it)"
    )
    p.add_argument(
        "--full", action="store_true", help="Libri-light sizes: 10 min / 1 h labeled, 10 h unlabeled"
    )
    p.add_argument("--scale", type=float, default=1.0, help="multiply every split's minutes")
    for split in SPLITS:
        flag = "--" + split.replace("_", "-") + "-minutes"
        p.add_argument(flag, type=float, default=None, dest=f"{split}_minutes",
                       help=f"minutes of {split} audio (overrides --full/--scale)")  # fmt: skip
    p.add_argument(
        "--domain-fraction", type=float, default=0.5, help="share of closed-domain command sentences"
    )
    p.add_argument(
        "--noise-prob", type=float, default=0.5, help="share of utterances with 25-40 dB SNR noise"
    )
    p.add_argument(
        "--diversity",
        choices=sorted(DIVERSITY_PRESETS),
        default="none",
        help="audio diversity preset (docs/corpus.md): diverse = speed, reverb, coloured noise, EQ "
        "and extra speakers in the unlabeled pool; diverse_train adds the effects to train splits",
    )
    p.add_argument("--force", action="store_true", help="rebuild even if corpus.json matches")
    args = p.parse_args(argv)

    minutes = corpus_minutes(full=args.full, scale=args.scale)
    for split in SPLITS:
        value = getattr(args, f"{split}_minutes")
        if value is not None:
            minutes[split] = value
    print("minutes per split: " + ", ".join(f"{k} {v:g}" for k, v in minutes.items()))
    start = time.perf_counter()
    info = build_corpus(
        args.out,
        **{f"{k}_minutes": v for k, v in minutes.items()},
        seed=args.seed,
        workers=args.workers,
        domain_fraction=args.domain_fraction,
        noise_prob=args.noise_prob,
        diversity=args.diversity,
        force=args.force,
        progress=True,
    )
    for name, split in info["splits"].items():
        print(f"  {name:12s} {split['minutes']:7.2f} min  {split['utterances']:6d} utterances  "
              f"{split['num_speakers']:3d} speakers")  # fmt: skip
    print(f"done in {time.perf_counter() - start:.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
