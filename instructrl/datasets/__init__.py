"""Datasets: the record types every stage agrees on, their JSONL reader, importers and tokenization."""
