"""Importers of the public formats, on small real samples (tests/fixtures, with attribution)."""

import json
from pathlib import Path

from instructrl.datasets.importers import import_alpaca, import_hh_rlhf
from instructrl.datasets.io import read_comparisons, read_demonstrations

FIXTURES = Path(__file__).parent.parent / "fixtures"


def test_hh_rlhf_pairs_become_k2_comparisons(tmp_path):
    out = tmp_path / "c.jsonl"
    report = import_hh_rlhf([FIXTURES / "hh-rlhf-helpful-base-test-sample.jsonl"], out)
    assert report.read == 24 and report.written + sum(report.skipped.values()) == 24
    comps = read_comparisons(out)
    first = json.loads((FIXTURES / "hh-rlhf-helpful-base-test-sample.jsonl").read_text().splitlines()[0])
    c = comps[0]
    assert c.prompt.startswith("Human: Do you know why turkeys") and c.prompt.endswith("Assistant:")
    assert first["chosen"].endswith(c.responses[0]) and first["rejected"].endswith(c.responses[1])
    assert all(x.ranking == [0, 1] for x in comps)


def test_self_instruct_seed_tasks_become_demonstrations(tmp_path):
    out = tmp_path / "d.jsonl"
    report = import_alpaca([FIXTURES / "self-instruct-seed-tasks-sample.jsonl"], out)
    demos = read_demonstrations(out)
    assert report.written == len(demos) == 12
    assert demos[0].prompt.startswith("Is there anything I can eat for a breakfast")
    assert demos[0].response.startswith("Yes, you can have 1 oatmeal banana protein shake")


def test_alpaca_json_array(tmp_path):
    src = tmp_path / "alpaca_data.json"
    src.write_text(
        json.dumps(
            [
                {"instruction": "Add", "input": "2 and 3", "output": "5"},
                {"instruction": "Say hi", "input": "", "output": "hi"},
            ]
        )
    )
    report = import_alpaca([src], tmp_path / "d.jsonl")
    demos = read_demonstrations(tmp_path / "d.jsonl")
    assert report.written == 2 and demos[0].prompt == "Add\n\n2 and 3" and demos[1].prompt == "Say hi"
