"""Export a fine-tuned CTC model as a complete Hugging Face folder.

The folder holds the weights and config (``to_hf``), ``vocab.json`` and the tokenizer
config of ``Wav2Vec2CTCTokenizer``, and the ``Wav2Vec2FeatureExtractor`` config both where
transformers 4.40+ reads it (``preprocessor_config.json``) and where 5.x writes it
(``processor_config.json``), so that ``transformers.pipeline("automatic-speech-recognition",
model=folder)`` loads it offline with either.
"""

from __future__ import annotations

import json
from pathlib import Path

from wav2vec2_lite.data.tokenizer import CharTokenizer
from wav2vec2_lite.interop.hf import check_exportable, to_hf
from wav2vec2_lite.models import Wav2Vec2ForCTC

__all__ = ["export_ctc_to_hf"]


def export_ctc_to_hf(
    model: Wav2Vec2ForCTC, tokenizer: CharTokenizer, folder: str | Path, *, sample_rate: int = 16000
) -> Path:
    """Write ``model`` + ``tokenizer`` to ``folder`` in transformers' layout; returns the folder."""
    import transformers  # optional: transformers (hf extra)

    if not isinstance(model, Wav2Vec2ForCTC):
        raise TypeError(f"export_ctc_to_hf needs a Wav2Vec2ForCTC; got {type(model).__name__}")
    if len(tokenizer) != model.config.vocab_size:
        raise ValueError(
            f"tokenizer has {len(tokenizer)} symbols but the model's CTC head has "
            f"{model.config.vocab_size} outputs"
        )
    check_exportable(model)  # before anything is written (e.g. a quantized input: no transformers model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hf = to_hf(model.eval())
    hf.config.pad_token_id, hf.config.bos_token_id, hf.config.eos_token_id = 0, 1, 2
    hf.save_pretrained(folder)
    vocab_path = folder / "vocab.json"
    vocab_path.write_text(json.dumps(tokenizer.to_hf_vocab(), ensure_ascii=False, indent=1))
    hf_tok = transformers.Wav2Vec2CTCTokenizer(
        str(vocab_path),
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        word_delimiter_token=tokenizer.word_delimiter,
        do_lower_case=False,
    )
    # layer-norm models expect zero-mean unit-variance input and an attention mask (fairseq normalize=True)
    layer_mode = model.config.feat_extract_norm == "layer"
    extractor = transformers.Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=sample_rate,
        padding_value=0.0,
        do_normalize=layer_mode,
        return_attention_mask=layer_mode,
    )
    transformers.Wav2Vec2Processor(feature_extractor=extractor, tokenizer=hf_tok).save_pretrained(folder)
    # transformers 5 saves the processor's parts inside processor_config.json; 4.x loads the feature
    # extractor only from preprocessor_config.json: write that file too, so that both load the folder
    extractor.save_pretrained(folder)
    return folder
