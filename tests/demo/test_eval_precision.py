"""The demo's evaluation in both precisions, whatever the machine's default: SFT's answers and its best-of-N
candidates come from one sampling pass, so candidate 0 is SFT's answer in bf16 too, where sampling is not
batch-invariant (the demo once sampled them apart and asserted they agreed: 9 of 349 answers did not, on a CPU
with bf16 units). The model is the quick demo's shipped base, a real model of the demo's world, and the prompts
few enough for bf16 on an AVX2-only CPU (emulated there, ~200x slower than fp32)."""

import dataclasses
from pathlib import Path

import pytest

from instructrl.demo import pipeline
from instructrl.demo.pipeline import BON_CURVE, Demo, DemoSettings
from instructrl.demo.world import World

QUICK_BASE = Path(pipeline.__file__).parent / "base" / "seed-0-quick"
N_PROMPTS = 24  # the fewest at which the two-pass version failed in bf16 on a 2-core AMX Xeon (3 of 24)


@pytest.fixture(scope="module")
def world():
    return World(0)


def demo_in(precision: str, world: World, out: Path) -> Demo:
    settings = dataclasses.replace(DemoSettings.quick(0), mixed_precision=precision)
    return Demo(out=out, settings=settings, world=world, train_labelers=[], heldout_labelers=[], log=print)


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_sft_answers_are_candidate_zero_of_best_of_n(precision, world, tmp_path):
    demo = demo_in(precision, world, tmp_path)
    prompts = [p.prompt for p in world.user_prompts(seed=0)[:N_PROMPTS]]
    model, tok = pipeline.load_policy(QUICK_BASE)
    answers, candidates = pipeline.sft_answers_and_candidates(demo, model, tok, prompts)
    assert [len(c) for c in candidates] == [max(BON_CURVE)] * N_PROMPTS
    assert answers == [c[0] for c in candidates]
    assert len(set(answers)) > N_PROMPTS // 2  # sampled answers to different prompts, not one string


def test_every_model_draws_sft_s_seeds_in_fp32_only(world, tmp_path):
    """Common random numbers: another model's answer i uses the seed of SFT's candidate 0 of prompt i, from a
    batch of another shape (one sample per prompt). Equal samples from an equal model hold in fp32 only."""
    demo = demo_in("no", world, tmp_path)
    prompts = [p.prompt for p in world.user_prompts(seed=0)[:N_PROMPTS]]
    model, tok = pipeline.load_policy(QUICK_BASE)
    answers, _ = pipeline.sft_answers_and_candidates(demo, model, tok, prompts)
    alone = pipeline.generate(
        demo, model, tok, prompts, seed=pipeline.hash_seed(0, "eval"), desc="answers: the same model"
    )
    assert [r[0] for r in alone] == answers
