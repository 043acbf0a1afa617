"""Evaluation: win rates with confidence intervals, labeler agreement, language-model loss (alignment tax)."""
