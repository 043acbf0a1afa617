"""Step 3: PPO (and PPO-ptx) against the reward model, with a per-token KL penalty to the SFT model."""
