"""pgolf trainer: data, model, optimizers, quantization, export, evaluation and legal test-time training."""
