"""Console entry points: ``w2v2-pretrain``, ``w2v2-finetune`` (Hydra), ``w2v2-transcribe``,
``w2v2-export-hf``, ``w2v2-evaluate``, ``w2v2-extract``, ``w2v2-probe``, ``w2v2-manifest``,
``w2v2-report``, ``w2v2-sweep-summary``.

    w2v2-pretrain data.manifest_dir=/data/ls960 trainer.update_freq=8
    w2v2-pretrain --config-name pretrain_tiny data.manifest_dir=/tmp/toy model.num_layers=2
    w2v2-finetune finetune.pretrained=outputs/pretrain/RUN data.manifest_dir=/data/ls10h recipe=base_10h
    w2v2-pretrain -m optim.lr=1e-3,5e-4 ...      # multirun: one run dir per job

Configs are read from the package's ``wav2vec2_lite/configs/`` (or ``$W2V2_CONFIG_DIR``).
Outputs go to Hydra's run directory (``outputs/<task>/<time>``; ``hydra.run.dir=DIR`` to
choose it, which is also how a killed run is resumed: the same dir continues from its
``checkpoints/last``).

Conventions shared by every command here:

* a user error (bad path, bad config key or value, bad input file) is one
  ``PROG: error: ...`` message on stderr, without a traceback unless ``--debug`` is given or
  ``HYDRA_FULL_ERROR=1`` is set; hints use the command's own syntax (``data.mono=mix``);
* exit status 0: all done; 1: some inputs failed (or training stopped after some updates)
  and the rest was processed; 2: a usage error, or nothing ran; 130: Ctrl-C (one line; training
  says which checkpoint a rerun resumes from); 141: the reader of stdout went away (``| head``),
  quietly; every entry point is wrapped by ``cli.common.console_script``;
* options may come before or after positional arguments;
* a tool never overwrites what it did not write: an output folder is new, empty or the same
  tool's (its ``.w2v2-output.json`` marker), anything else needs ``--overwrite``, a training run
  folder is never one, and the whole output set is swapped in at once
  (``wav2vec2_lite.tools.output_dir``, docs/reliability.md).
"""

from wav2vec2_lite.cli.asr import evaluate, export_hf, transcribe
from wav2vec2_lite.cli.common import CONFIG_DIR, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE
from wav2vec2_lite.cli.tools import extract, manifest, probe, report, sweep_summary
from wav2vec2_lite.cli.training import finetune, pretrain, run_from_hydra

__all__ = [
    "pretrain",
    "finetune",
    "transcribe",
    "evaluate",
    "extract",
    "export_hf",
    "probe",
    "manifest",
    "report",
    "sweep_summary",
    "run_from_hydra",
    "CONFIG_DIR",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_USAGE",
]
