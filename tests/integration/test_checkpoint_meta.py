"""instructrl.json, the notes each stage saves beside its checkpoint, has one reader: every evaluation prompts
a checkpoint with the same template, whichever stage wrote it, and one without notes (a folder, a Hub model)
with the one default."""

import json
import shutil

import pytest
from conftest import run_cli, run_stage, write_jsonl

PPO_SET = [
    "iterations=1",
    "rollout_batch_size=8",
    "batch_size=8",
    "max_new_tokens=4",
    "eval_prompts=8",
    "mixed_precision=no",
    'prompt_template="Q: {prompt}\\nA:"',  # YAML; a saved template the evaluations must all follow
]
DEFAULT = "{prompt}\n"  # the stage configs' default, so also a raw model's


@pytest.fixture(scope="module")
def ppo_dir(tmp_path_factory, sft_dir, rm_dir, data_dir):
    out = tmp_path_factory.mktemp("runs") / "ppo"
    run_stage("ppo", out, PPO_SET, policy_dir=sft_dir, reward_dir=rm_dir, prompts=data_dir / "prompts.jsonl")
    return out / "final"


class Seen(Exception):
    """Stops an evaluation once it has shown its template."""


def templates_used(model: str, monkeypatch) -> dict[str, str | None]:
    """The prompt template each evaluation formats the prompts of `model` with (its `model` prompt format)."""
    import instructrl.evaluation.models as answers
    from instructrl.evaluation.benchmarks import bias, toxicity

    used: dict[str, str | None] = {}

    def sample(*_args, prompt_template, **_kw):
        used["eval answers"] = prompt_template
        raise Seen

    def context(_instruction, template):
        used["bias"] = template
        raise Seen

    monkeypatch.setattr(answers, "sample_responses", sample)
    monkeypatch.setattr(bias, "instruction_context", context)
    with pytest.raises(Seen):
        answers.generate_answers_k(model, ["say it"], 1)
    with pytest.raises(Seen):
        bias.evaluate_model(model, [bias.CrowsPair("a b", "a c", "race", "x:1")], [], None)
    used["toxicity"] = toxicity.prompt_template(model, "model")
    return used


def test_every_evaluation_prompts_each_kind_of_checkpoint_with_the_same_template(
    sft_dir, rm_dir, ppo_dir, tiny_model_dir, hub_cache, tmp_path, monkeypatch
):
    from instructrl.demo import base
    from instructrl.models.checkpoint import CheckpointMeta

    old = shutil.copytree(tiny_model_dir, tmp_path / "old")
    (old / "instructrl.json").write_text(json.dumps({"stage": "sft", "extra": 1}))  # before templates
    shipped = tmp_path / "pretrain" / "final"
    base.install(base.SHIPPED / "seed-0-quick", shipped, tmp_path / "init")
    expected = {
        "sft": (sft_dir, DEFAULT),
        "rm": (rm_dir, DEFAULT),
        "ppo": (ppo_dir, "Q: {prompt}\nA:"),
        "the demo's shipped base": (shipped, DEFAULT),
        "a folder without instructrl.json": (tiny_model_dir, DEFAULT),
        "a Hub model": ("org/tiny-gpt2", DEFAULT),
        "an instructrl.json without a template": (old, DEFAULT),
    }
    assert {kind: CheckpointMeta.read(model).prompt_template for kind, (model, _) in expected.items()} == {
        kind: template for kind, (_, template) in expected.items()
    }
    got = {kind: templates_used(str(model), monkeypatch) for kind, (model, _) in expected.items()}
    assert got == {
        kind: dict.fromkeys(("eval answers", "bias", "toxicity"), template)
        for kind, (_, template) in expected.items()
    }


def test_the_files_keep_the_keys_each_stage_wrote_before_and_unknown_keys_survive(
    sft_dir, rm_dir, ppo_dir, tiny_model_dir, tmp_path
):
    from instructrl.config import DEFAULT_PROMPT_TEMPLATE
    from instructrl.models.checkpoint import CheckpointMeta

    assert DEFAULT_PROMPT_TEMPLATE == DEFAULT
    keys = {"stage", "prompt_template", "lora_r"}
    rm_keys = {*keys, "sft_model", "round", "lineage"}
    for model, expected in [
        (sft_dir, {*keys, "base_model"}),
        (rm_dir, {*rm_keys, "reward_bias", "reward_bias_stored_in", "reward_bias_reference"}),
        (ppo_dir, {*rm_keys, "reward_model", "ptx_coef", "iteration"}),
        (ppo_dir.parent / "value", {*rm_keys, "reward_model", "ptx_coef"}),
    ]:
        on_disk = json.loads((model / "instructrl.json").read_text())
        assert set(on_disk) == expected
        assert CheckpointMeta.read(model).as_dict() == on_disk
    assert CheckpointMeta.read(ppo_dir.parent / "value").stage == "ppo-value"
    assert CheckpointMeta.read(ppo_dir).sft_model == str(sft_dir)

    later = {"stage": "sft", "prompt_template": "{prompt} =>", "from_a_later_version": [1, 2]}
    CheckpointMeta.parse(later, "test").write(tmp_path)
    assert json.loads((tmp_path / "instructrl.json").read_text()) == later
    assert (
        CheckpointMeta.find(tiny_model_dir) is None
        and CheckpointMeta.read(tiny_model_dir) == CheckpointMeta()
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"stage": "sft",', "not JSON"),
        ('["sft"]', "must be a JSON object"),
        ('{"stage": "rm", "round": "two"}', "field 'round'"),
        ('{"prompt_template": "Q:"}', "field 'prompt_template': Value error, must contain {prompt}"),
    ],
)
def test_a_malformed_instructrl_json_exits_2_naming_the_file(tiny_model_dir, tmp_path, content, message):
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    (model / "instructrl.json").write_text(content)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "say it"}])
    code, _, err = run_cli(
        "eval", "answers", "--model", f"m={model}", "--prompts", prompts, "--out", tmp_path / "a.jsonl"
    )
    assert code == 2 and f"{model / 'instructrl.json'}" in err and message in err, err
    assert "Traceback" not in err and not (tmp_path / "a.jsonl").exists()
