#!/usr/bin/env python
"""Ship a pretraining run as a checkpoint inside the package, and check a shipped one.

    python scripts/ship_pretrained.py make runs/shipped/contrastive_s1 --name tiny-espeak-10h
    python scripts/ship_pretrained.py check tiny-espeak-10h                  # checksum + fresh valid set
    python scripts/ship_pretrained.py reproduce tiny-espeak-10h --updates 200 --corpus data/science

``make`` writes ``wav2vec2_lite/pretrained/NAME/`` (weights, config.json with the weights'
sha256, provenance.json); ``reproduce`` reruns the provenance command for N updates and
compares the logged training losses (same CPU kind and threads: bit-for-bit).
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wav2vec2_lite import pretrained  # noqa: E402


def _normalize(name: str) -> bool:
    """Whether the checkpoint was pretrained on normalised waves (its config.json metadata)."""
    return bool(
        json.loads((pretrained.folder(name) / "config.json").read_text())["metadata"].get("normalize")
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ship_pretrained", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make", help="bundle a finished pretraining run into the package")
    m.add_argument("run_dir")
    m.add_argument("--name", required=True)
    m.add_argument("--description", default="")
    m.add_argument("--out-root", default=str(Path(pretrained.__file__).parent))
    m.add_argument("--force", action="store_true", help="replace an existing bundle of that name")
    m.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        default="best",
        help="the run's checkpoint to ship (default: best, the trainer's choice on valid loss)",
    )
    m.add_argument("--why", default="", help="with --checkpoint last: why, recorded in provenance.json")
    c = sub.add_parser("check", help="checksum and accuracy on a freshly synthesized valid set")
    c.add_argument("name")
    r = sub.add_parser("reproduce", help="rerun the provenance command for N updates; compare the losses")
    r.add_argument("name")
    r.add_argument("--updates", type=int, default=200)
    r.add_argument("--corpus", help="the corpus folder, if not where the provenance says")
    args = p.parse_args(argv)
    try:
        if args.cmd == "make":
            from wav2vec2_lite.pretrained.bundle import make_bundle

            out = make_bundle(
                args.run_dir,
                args.name,
                args.out_root,
                description=args.description,
                force=args.force,
                checkpoint=args.checkpoint,
                why=args.why,
            )
            prov = json.loads((out / pretrained.PROVENANCE_NAME).read_text())
            print(
                f"wrote {out}: {prov['num_parameters']:,} parameters, "
                f"{prov['hours_of_audio_seen']} h of audio seen, "
                f"chosen update {prov['chosen_checkpoint']['update']}, fresh valid accuracy "
                f"{prov['fresh_valid_check']['accuracy']:.4f}"
            )
        elif args.cmd == "check":
            from wav2vec2_lite.pretrained.check import fresh_valid_set, pretext_accuracy

            prov = pretrained.provenance(args.name)
            model = pretrained.load(args.name)  # verifies the weights' sha256
            rec = prov["fresh_valid_check"]
            with tempfile.TemporaryDirectory() as tmp:
                got = pretext_accuracy(
                    model,
                    fresh_valid_set(Path(tmp) / "v", rec["corpus_seed"], rec["valid_minutes"]),
                    seed=rec["mask_seed"],
                    normalize_waves=_normalize(args.name),
                )
            ok = abs(got["accuracy"] - rec["accuracy"]) <= rec["tolerance"]
            print(
                f"{args.name}: checksum ok; fresh valid accuracy {got['accuracy']:.4f} vs recorded "
                f"{rec['accuracy']:.4f} (tolerance {rec['tolerance']}): {'ok' if ok else 'MISMATCH'}"
            )
            return 0 if ok else 1
        else:
            from wav2vec2_lite.pretrained.check import reproduce_losses

            with tempfile.TemporaryDirectory() as tmp:
                rows = reproduce_losses(
                    pretrained.provenance(args.name),
                    Path(tmp) / "run",
                    updates=args.updates,
                    corpus=args.corpus,
                )
            for row in rows:
                print(
                    f"update {row['update']:5d}: recorded {row['recorded']:.6f}  rerun {row['rerun']:.6f}  "
                    f"relative difference {row['rel_diff']:.1e}"
                )
            print("reproduced")
    except (FileNotFoundError, FileExistsError, ValueError, AssertionError, RuntimeError) as e:
        print(f"ship_pretrained: error: {e}", file=sys.stderr)
        return 2 if not isinstance(e, AssertionError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
