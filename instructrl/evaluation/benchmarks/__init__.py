"""Public benchmarks of the InstructGPT paper: TruthfulQA, and the alignment tax on NLP tasks."""
