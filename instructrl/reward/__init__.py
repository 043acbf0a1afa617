"""Step 2: the reward model, trained on rankings of K responses per prompt."""
