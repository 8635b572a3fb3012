#!/usr/bin/env python
"""Benchmark wav2vec2_lite against Hugging Face transformers side by side (see docs/benchmarks.md).

python scripts/benchmark.py --config base --batch 2 --seconds 4 --dtype both --out bench.json
"""

from wav2vec2_lite.tools.benchmark_cli import main

if __name__ == "__main__":
    main()
