"""Evaluating and training a model: accuracy, loss, size, latency, fine-tuning and BatchNorm recalibration."""
