"""Pretraining objectives: masking, distractors, targets and their losses (and CTC)."""
