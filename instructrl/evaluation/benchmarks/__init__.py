"""The paper's automatic evaluations on public benchmarks (InstructGPT §4.2, Appendix D): toxicity on
RealToxicityPrompts (`toxicity.py`), bias on CrowS-Pairs and Winogender (`bias.py`), TruthfulQA
(`truthfulqa.py`) and the alignment tax on NLP tasks (`tax.py`, `harness.py`). Each writes `results.json` in one
layout (`_results.py`); `common.py` holds the log-likelihoods and greedy answers they share. `runs.py` gives each
a typed config and the function that runs it, `registry.py` names them, and `suite.py` runs them all on the same
models and writes the report: `instructrl eval NAME` and `instructrl eval suite` go through the same functions."""
