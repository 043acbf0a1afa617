"""instructrl: InstructGPT-style RLHF (SFT -> reward model -> PPO / PPO-ptx) on any Hugging Face causal LM.

Kept free of heavy imports: `import instructrl` must not pull in torch, transformers or the web stack.
"""

__version__ = "0.1.0"
