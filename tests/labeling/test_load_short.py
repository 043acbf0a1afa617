"""The counting invariant of the load benchmark, briefly: concurrent labelers (some double-submitting),
then stored submissions == acknowledged ones, no duplicates, no errors; also with a large prompt upload
imported meanwhile (issue 13, finding 5). Timings: benchmarks/label_load.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from label_load import run_load  # noqa: E402


def test_concurrent_submissions_are_all_stored_once(db_url):
    result = run_load(db_url, clients=6, seconds=3.0, retry_every=3)
    assert result.errors == 0, result.error_samples
    assert result.acknowledged > 0
    assert result.stored == result.acknowledged
    assert result.duplicate_keys == 0 and result.duplicate_assignments == 0
    assert result.replays > 0  # the deliberate double submissions were answered from the stored row


def test_labelers_lose_nothing_and_wait_under_2_s_while_a_4_mb_upload_is_imported(db_url):
    result = run_load(db_url, clients=6, seconds=10.0, retry_every=3, import_mb=4)
    assert result.import_outcome.startswith("201"), result.import_outcome
    assert result.errors == 0, result.error_samples
    assert result.stored == result.acknowledged
    assert result.duplicate_keys == 0 and result.duplicate_assignments == 0
    assert result.import_requests > 0
    assert result.import_max_ms < 2000, result.import_slowest
