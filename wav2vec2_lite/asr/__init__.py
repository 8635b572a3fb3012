"""Speech recognition with a fine-tuned model: decoding, long-file chunking, transcription,
evaluation, WER/CER."""
