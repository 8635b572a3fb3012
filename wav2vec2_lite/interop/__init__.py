"""Interop with transformers (``from_hf``/``to_hf``) and fairseq checkpoints (``load_fairseq``)."""

from wav2vec2_lite.interop.hf import config_from_hf, config_to_hf, from_hf, to_hf

__all__ = ["from_hf", "to_hf", "config_from_hf", "config_to_hf", "load_fairseq"]


def __getattr__(name: str):
    if name == "load_fairseq":
        # start-up: the fairseq reader and omegaconf (~90 ms) stay out of `import wav2vec2_lite`
        # (every w2v2-*)
        from wav2vec2_lite.interop.fairseq import load_fairseq

        return load_fairseq
    raise AttributeError(name)
