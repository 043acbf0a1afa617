"""Models: loading Hugging Face checkpoints, the one `score()` function, log-probs, values and generation."""
