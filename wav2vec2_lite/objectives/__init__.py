"""Pretraining objectives and their parts (and the CTC loss).

``base`` (the interface every objective implements), ``registry`` (name -> class, selected
by ``Wav2Vec2Config.objective``), ``contrastive`` (wav2vec 2.0), ``best_rq`` (BEST-RQ),
``masking`` (span masks, distractor sampling), ``losses`` (contrastive, diversity, feature
penalty, CTC). See ``docs/objectives.md``. Nothing is imported here: the config imports
``registry`` (which imports the objectives), and an empty package keeps that chain acyclic.
"""
