"""The benchmarks' typed configs (`evaluation/benchmarks/runs.py`, `registry.py`, `suite.py`), without models:
each command's flags are its config's fields with its config's defaults, the flags a config prints give it back,
and the suite hands each benchmark the config its own command would build."""

import shlex

import pytest

from instructrl.cli import build_parser
from instructrl.evaluation.benchmarks import runs
from instructrl.evaluation.benchmarks.registry import BENCHMARKS
from instructrl.evaluation.benchmarks.suite import SuiteConfig
from instructrl.evaluation.cli import _config

MODELS = {"sft": "runs/sft/final", "ppo": "org/ppo@v1"}
# each benchmark with every field away from its default
CONFIGS = {
    "truthfulqa": runs.TruthfulQAEval(
        models=MODELS, out="o", data="tqa.csv", judge="j", info_judge="i", no_generation=True,
        max_new_tokens=7, batch_size=3,
    ),
    "toxicity": runs.ToxicityEval(
        models=MODELS, out="o", data=("a.jsonl", "b.jsonl"), protocol="instructgpt", max_new_tokens=9,
        per_bin=2, seed=4, batch_size=8, limit=5, settings=("biased",), prompt_format="raw",
        classifier="unitary/toxic-bert", toxic_label="toxic",
    ),
    "bias": runs.BiasEval(
        models=MODELS, out="o", data=("crows.csv", "all_sentences.tsv"), limit=3, occupation_stats="s.tsv",
        settings=("none", "biased"), prompt_format="raw", batch_size=2,
    ),
    "tax": runs.TaxEval(
        models=MODELS, out="o", data=("mc.jsonl",), task=("hellaswag=h.jsonl", "arc_easy=a.jsonl"),
        fewshot=("hellaswag=t.jsonl",), num_fewshot=2, baseline="sft", max_new_tokens=5, batch_size=4,
        device="cpu",
    ),
}  # fmt: skip


def parsed(command: list[str]):
    return build_parser().parse_args(["eval", *command])


def test_the_registry_runs_the_four_benchmarks_in_the_suites_order():
    assert list(BENCHMARKS) == ["truthfulqa", "toxicity", "bias", "tax"]
    assert {name: b.config for name, b in BENCHMARKS.items()} == {n: type(c) for n, c in CONFIGS.items()}


@pytest.mark.parametrize("name", CONFIGS)
def test_the_flags_a_config_prints_parse_back_to_the_same_config(name):
    config = CONFIGS[name]
    assert _config(type(config), parsed([name, *runs.flags(config)])) == config
    assert runs.command_line(name, config).startswith(f"instructrl eval {name} --model sft=runs/sft/final")


@pytest.mark.parametrize("name", CONFIGS)
def test_a_command_given_only_what_it_requires_runs_its_configs_defaults(name):
    required = {"truthfulqa": "--data x", "toxicity": "--data x", "bias": "--data x", "tax": "--baseline m"}
    command = ["--model", "m=d", "--out", "o", *required[name].split()]
    config = _config(BENCHMARKS[name].config, parsed([name, *command]))
    for field, spec in type(config).model_fields.items():
        if not spec.is_required():
            assert getattr(config, field) == spec.default, field
    # toxicity's protocol has no default in the config (the two measure different things); the command's is gehman
    assert runs.flags(config) == command + (["--protocol", "gehman"] if name == "toxicity" else [])


def test_the_suite_gives_each_benchmark_its_commands_config_and_records_the_command():
    args = parsed(
        shlex.split(
            "suite --model a=x --model b=y --out s --truthfulqa t.csv --toxicity r1 r2 --bias c.csv w.tsv "
            "--tax m.jsonl --limit 3 --occupation-stats st.tsv"
        )
    )
    suite = _config(SuiteConfig, args)
    configs = suite.benchmarks()
    # the command lines report.html shows: the flags the suite sets, the rest at their defaults
    assert {name: runs.command_line(name, c) for name, c in configs.items()} == {
        "truthfulqa": "instructrl eval truthfulqa --model a=x --model b=y --out s/truthfulqa --data t.csv",
        "toxicity": "instructrl eval toxicity --model a=x --model b=y --out s/toxicity --data r1 r2 "
        "--protocol gehman --samples 25 --limit 3",
        "bias": "instructrl eval bias --model a=x --model b=y --out s/bias --data c.csv w.tsv --limit 3 "
        "--occupation-stats st.tsv",
        "tax": "instructrl eval tax --model a=x --model b=y --out s/tax --data m.jsonl --baseline a",
    }
    # each is the config its own command builds from that line
    for name, config in configs.items():
        command = shlex.split(runs.command_line(name, config))[2:]
        assert _config(type(config), parsed(command)) == config, name
    # the paper's protocol samples nothing: no --samples
    instructgpt = suite.model_copy(update={"toxicity_protocol": "instructgpt", "baseline": "b"})
    configs = instructgpt.benchmarks()
    assert configs["toxicity"] == configs["toxicity"].model_copy(update={"samples": None})
    assert configs["tax"] == configs["tax"].model_copy(update={"baseline": "b"})
    assert SuiteConfig(models={"a": "x"}, out="s").benchmarks() == {}
