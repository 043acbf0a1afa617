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


def test_hh_rlhf_dialogues_become_conversations_with_two_replies(tmp_path, capsys):
    import pytest

    from instructrl.cli import main
    from instructrl.datasets.records import Message

    src, out = FIXTURES / "hh-rlhf-helpful-base-test-sample.jsonl", tmp_path / "c.jsonl"
    with pytest.raises(SystemExit) as done:
        main(["import", "hh-rlhf", str(src), "--out", str(out), "--format", "messages"])
    assert done.value.code == 0
    assert json.loads(capsys.readouterr().out)["written"] == 24
    comps = read_comparisons(out)
    second = json.loads(src.read_text().splitlines()[1])
    c = comps[1]
    assert c.messages == [
        Message(role="user", content="How can I find out what types of butterflies are in my area?"),
        Message(role="assistant", content="Which location are you in?"),
        Message(role="user", content="I am in Oregon."),
        Message(
            role="assistant",
            content="There are about 175 species of butterflies in Oregon, of which 100 are long-distance "
            "migrants from southern California.  Also, some of the common butterflies in Oregon",
        ),
        Message(role="user", content="Great. What are some common species then?"),
    ]
    assert c.responses == [
        second["chosen"].rsplit("\n\nAssistant: ", 1)[1],
        second["rejected"].rsplit("\n\nAssistant: ", 1)[1],
    ]
    assert c.responses[1].startswith("Are you interested in just the common butterflies?")
    assert c.ranking == [0, 1]
    assert all(x.messages is not None and x.messages[-1].role == "user" for x in comps)
    # Alpaca demonstrations are single turns: --format messages is refused with exit code 2
    with pytest.raises(SystemExit) as refused:
        main(["import", "alpaca", str(src), "--out", str(out), "--format", "messages"])
    assert refused.value.code == 2


def test_hh_rlhf_dialogues_that_do_not_alternate_turns_are_skipped_and_counted(tmp_path):
    src, out = tmp_path / "hh.jsonl", tmp_path / "c.jsonl"
    good = {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}
    twice = {
        "chosen": "\n\nHuman: hi\n\nHuman: hi?\n\nAssistant: yes",
        "rejected": "\n\nHuman: hi\n\nHuman: hi?\n\nAssistant: no",
    }
    differ = {"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: ho\n\nAssistant: b"}
    src.write_text("".join(json.dumps(r) + "\n" for r in (good, twice, differ)), encoding="utf-8")
    report = import_hh_rlhf([src], out, records_format="messages")
    assert (report.read, report.written) == (3, 1)
    assert report.skipped == {
        "empty or not alternating Human/Assistant turns": 1,
        "dialogues differ before the last Assistant turn": 1,
    }
    [c] = read_comparisons(out)
    assert (c.prompt, c.responses) == ("hi", ["hello", "go away"])
