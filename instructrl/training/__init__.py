"""The runtime every stage shares: accelerator set-up, exact batch planning, run directories, checkpoints."""
