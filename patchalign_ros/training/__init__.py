"""Training (Stage 1 distillation, Stage 2 part-text alignment) and evaluation."""
