"""Experiments: the runs of a study as jobs (:mod:`~wav2vec2_lite.experiments.jobs`, through submitit:
on this machine or a SLURM cluster)."""
