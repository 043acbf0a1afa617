"""Configs and records reject bad input with messages that name the file, line and field."""

import pytest

from instructrl.config import load_config
from instructrl.datasets.io import read_comparisons, read_demonstrations, read_prompts
from instructrl.errors import UserError
from instructrl.ppo.config import PPOConfig
from instructrl.sft.config import SFTConfig


def test_unknown_key_names_file_line_and_suggests(tmp_path):
    f = tmp_path / "sft.yaml"
    f.write_text("lr: 1e-4\nepoch: 3\n")
    with pytest.raises(UserError, match=r"sft.yaml:2: unknown config key 'epoch'.*Did you mean 'epochs'"):
        load_config(SFTConfig, f)


def test_set_overrides_file_and_empty_means_none(tmp_path):
    f = tmp_path / "ppo.yaml"
    f.write_text("kl_target: 6.0\nlr: 1.0e-4\n")
    c = load_config(PPOConfig, f, ["lr=3e-5", "kl_target=", "mixed_precision=no"])
    assert c.lr == 3e-5 and c.kl_target is None and c.mixed_precision == "no"


def test_bad_value_names_its_source():
    with pytest.raises(UserError, match=r"--set batch_size=many: key 'batch_size'"):
        load_config(SFTConfig, None, ["batch_size=many"])
    with pytest.raises(UserError, match="multiple of batch_size"):
        load_config(PPOConfig, None, ["rollout_batch_size=60", "batch_size=16"])


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "p", "responses": ["a", "b", "c"], "ranking": [0, 0, 2]}', "not a permutation of 0..2"),
        ('{"prompt": "p", "responses": ["a"], "ranking": [0]}', "needs 2 to 9 responses, got 1"),
        (
            '{"prompt": "p", "responses": ["a","b","c","d","e","f","g","h","i","j"], "ranking": [0,1,2,3,4,5,6,7,8,9]}',
            "needs 2 to 9 responses, got 10",
        ),
        ('{"prompt": "p", "responses": ["a", "b"]}', "field 'ranking': missing"),
        ('{"prompt": "p", "responses": ["a", "b"], "ranking": [0, 1]', "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_comparison_lines(tmp_path, line, message):
    f = write(
        tmp_path / "c.jsonl", '{"prompt": "ok", "responses": ["a", "b"], "ranking": [1, 0]}\n' + line + "\n"
    )
    with pytest.raises(UserError, match=rf"c.jsonl:2: .*{message}"):
        read_comparisons(f)


def test_missing_field_and_empty_file(tmp_path):
    with pytest.raises(UserError, match=r"d.jsonl:1: field 'response': missing"):
        read_demonstrations(write(tmp_path / "d.jsonl", '{"prompt": "p"}\n'))
    with pytest.raises(UserError, match="no prompts records found"):
        read_prompts(write(tmp_path / "empty.jsonl", "\n\n"))
    with pytest.raises(UserError, match="no such file"):
        read_prompts(tmp_path / "nope.jsonl")


def test_alternative_forms_are_normalised(tmp_path):
    f = write(
        tmp_path / "mixed.jsonl",
        '{"prompt": "p", "chosen": "good", "rejected": "bad"}\n'
        '{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: hello!", "rejected": "\\n\\nHuman: hi\\n\\nAssistant: go away"}\n',
    )
    a, b = read_comparisons(f)
    assert (a.responses, a.ranking) == (["good", "bad"], [0, 1])
    assert b.prompt == "Human: hi\n\nAssistant:" and b.responses == ["hello!", "go away"]
    d = write(tmp_path / "alpaca.jsonl", '{"instruction": "Add", "input": "2 and 3", "output": "5"}\n')
    (demo,) = read_demonstrations(d)
    assert demo.prompt == "Add\n\n2 and 3" and demo.response == "5"


def test_directory_of_files(tmp_path):
    (tmp_path / "d").mkdir()
    write(tmp_path / "d" / "a.jsonl", '{"prompt": "p1", "user_id": "u1"}\n')
    write(tmp_path / "d" / "b.jsonl", '{"prompt": "p2", "user_id": "u2"}\n')
    assert [p.prompt for p in read_prompts(tmp_path / "d")] == ["p1", "p2"]


def test_an_ab_pair_is_what_the_labeling_app_uploads_in_the_layout_eval_answers_wrote():
    import json

    from instructrl.datasets.io import to_json_line
    from instructrl.datasets.records import ABPair
    from instructrl.labeling.schemas import ABUploadItem

    fields = {"prompt": "Héllo?", "model_a": "ppo", "response_a": "", "model_b": "sft", "response_b": "Hi"}
    line = to_json_line(ABPair(**fields))
    assert line == json.dumps(fields, ensure_ascii=False)  # the dict `eval answers` wrote before ABPair
    item = ABUploadItem.model_validate_json(line)
    assert isinstance(item, ABPair) and item.model_dump() == fields
    assert list(ABUploadItem.model_fields) == list(ABPair.model_fields)
