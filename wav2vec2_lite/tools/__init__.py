"""Tools around the library: benchmarks against transformers, sweeps, reports, plots."""
