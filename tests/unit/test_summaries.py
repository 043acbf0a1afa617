"""summary.json: each stage's typed summary is its one writer and reader."""

import json

import pytest

from instructrl.errors import UserError
from instructrl.reward.summary import RMSummary
from instructrl.sft.summary import SFTSummary

FACTS = {
    "mixed_precision": "no",
    "processes": 1,
    "sharding": "none",
    "process_state_bytes": {"params": 4, "grads": 4, "optimizer": 8, "param_type": "Tensor"},
    "time_s": 1.5,
}
SFT = {
    "val_loss": 2.5,
    "best_step": 3,
    "steps": 4,
    "train_examples": 64,
    "val_examples": 8,
    "skipped_too_long": 1,
    "truncated": 0,
    "max_length": 128,
}


def test_a_summary_reads_back_as_written_with_how_it_ran_last(tmp_path):
    summary = SFTSummary(**SFT, **FACTS)
    (tmp_path / "summary.json").write_text(json.dumps(summary.as_dict(), indent=2))
    assert list(summary.as_dict()) == ["stage", *SFT, *FACTS]
    assert SFTSummary.read(tmp_path) == SFTSummary.read(tmp_path / "summary.json") == summary


def test_reading_another_stages_summary_names_what_differs(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps(SFTSummary(**SFT, **FACTS).as_dict()))
    with pytest.raises(UserError, match=r"does not hold a RMSummary: 'stage': Input should be 'rm'"):
        RMSummary.read(tmp_path)
    with pytest.raises(UserError, match="the run has not finished"):
        SFTSummary.read(tmp_path / "elsewhere")
