"""The base model shipped for seed 0 is used only when the world the code builds now is the one it was trained
on; anything else pretrains from scratch and says why."""

from __future__ import annotations

import dataclasses
import json

import pytest
from safetensors.torch import load_file

from instructrl.demo import base
from instructrl.demo.pipeline import Demo, step_pretrain, step_world
from instructrl.demo.settings import DemoSettings, pretrain_config
from instructrl.demo.world import World


def world_step(out, settings: DemoSettings) -> tuple[Demo, list[str]]:
    """A demo of `settings` in `out` after its world step (the intake, the corpus, the tokenizer, the initial
    weights), and the log it writes."""
    logs: list[str] = []
    demo = Demo(
        out=out,
        settings=settings,
        world=World(settings.seed),
        train_labelers=[],
        heldout_labelers=[],
        log=logs.append,
    )
    step_world(demo)
    return demo, logs


@pytest.fixture(scope="module")
def seed0_world(tmp_path_factory):
    """The full demo's world step of seed 0."""
    return world_step(tmp_path_factory.mktemp("demo"), DemoSettings.full(0))


def _inputs(demo: Demo) -> dict:
    return base.pretraining_inputs(
        demo.out, pretrain_config(demo.settings).model_dump(), demo.settings.block_size
    )


def test_the_shipped_base_was_trained_on_the_world_the_code_builds_now(seed0_world):
    """If this fails, the world, the tokenizer, the initial weights or the pretraining config changed: train
    a new base (`instructrl demo --pretrain --out RUN`, then `python -m instructrl.demo.base RUN`)."""
    demo, _ = seed0_world
    folder, why_not = base.shipped_base(0, _inputs(demo))
    assert folder is not None, why_not
    meta = json.loads((folder / "base.json").read_text())
    assert base.sha256(folder / "model.safetensors") == meta["weights_sha256"]
    assert meta["summary"]["mixed_precision"] == "no"  # fp32 weights, whatever the CPU


def test_step_pretrain_installs_the_shipped_weights(seed0_world):
    demo, logs = seed0_world
    summary = step_pretrain(demo)
    assert summary["shipped"] is True and summary["val_loss"] == pytest.approx(0.7047, abs=1e-4)
    final = demo.path("pretrain", "final")
    shipped, installed = (
        load_file(base.SHIPPED / "seed-0" / "model.safetensors"),
        load_file(final / "model.safetensors"),
    )
    assert shipped.keys() == installed.keys() and all((shipped[k] == installed[k]).all() for k in shipped)
    assert json.loads((final / "instructrl.json").read_text())["base_model"] == str(
        demo.path("world", "init")
    )
    assert any("shipped base model of seed 0" in line for line in logs)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda i: i["config"].update(lr=1e-3), "config.lr"),
        (lambda i: i["sha256"].update({"data/pretrain.jsonl": "0" * 64}), "data/pretrain.jsonl"),
        (lambda i: i.update(block_size=64), "block_size"),
    ],
)
def test_other_inputs_are_not_given_the_shipped_base(seed0_world, change, reason):
    demo, _ = seed0_world
    inputs = _inputs(demo)
    change(inputs)
    folder, why_not = base.shipped_base(0, inputs)
    assert folder is None and reason in why_not


def test_mixed_precision_does_not_change_which_base_is_used(seed0_world):
    demo, _ = seed0_world
    bf16 = dataclasses.replace(demo.settings, mixed_precision="bf16")
    inputs = base.pretraining_inputs(demo.out, pretrain_config(bf16).model_dump(), bf16.block_size)
    assert base.shipped_base(0, inputs)[0] is not None


def test_no_base_is_shipped_for_another_seed(seed0_world):
    demo, _ = seed0_world
    folder, why_not = base.shipped_base(1, _inputs(demo))
    assert folder is None and "no base model is shipped for seed 1" in why_not


def test_a_world_of_other_inputs_is_pretrained_from_scratch(tmp_path):
    """The fallback: a smaller corpus than any shipped base saw; the demo's own pretraining runs, and says why."""
    demo, logs = world_step(
        tmp_path, dataclasses.replace(DemoSettings.quick(0), corpus_docs=300, pretrain_epochs=1)
    )
    summary = step_pretrain(demo)
    assert "shipped" not in summary and summary["steps"] > 0 and summary["val_loss"] > 0
    assert (tmp_path / "pretrain" / "final" / "model.safetensors").exists()
    assert any("pretraining from scratch" in line and "data/pretrain.jsonl" in line for line in logs), logs


def test_the_quick_demo_has_its_own_shipped_base(tmp_path):
    demo, _ = world_step(tmp_path, DemoSettings.quick(0))
    folder, why_not = base.shipped_base(0, _inputs(demo))
    assert folder is not None and folder.name == "seed-0-quick", why_not
