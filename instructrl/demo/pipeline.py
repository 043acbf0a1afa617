"""`instructrl demo`: the whole InstructGPT story in a small simulated world, on a CPU.

  0. the world: users write prompts; the intake dedups them, drops personal information, keeps at most 200
     per user and splits train/validation/test by user; a pretraining corpus; a word-level tokenizer
  1. pretrain a small GPT from scratch on the corpus (the story's "GPT-3")
  2. training labelers write demonstrations -> SFT
  3. the SFT model samples K = 4..9 responses per prompt, training labelers rank them -> reward model
  4. PPO and PPO-ptx against the reward model
  4'. rounds 2..R (ChatGPT's loop): training labelers rank the current PPO policy's samples (mixed with the
     previous policy's), the reward model continues training on every round's rankings, PPO continues from
     the current policy with the KL still measured to SFT
  5. evaluation on held-out users' prompts, judged by held-out labelers only
  6. the report

Every step writes its files under OUT/<step>/ and a done.json last, so `--resume` skips finished steps
(and a trainer interrupted mid-way continues from its checkpoint). The held-out labelers and the world's
gold standard reach step 5 only.
"""

from __future__ import annotations

import functools
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instructrl.datasets.io import atomic_write_text, read_records, write_jsonl
from instructrl.datasets.records import Comparison, Demonstration, PromptRecord
from instructrl.demo import base
from instructrl.demo.knowledge import canon
from instructrl.demo.labelers import OUTCOME, Labeler, make_labelers
from instructrl.demo.probes import ProbeSet
from instructrl.demo.settings import (
    TEMPLATE,
    DemoSettings,
    ppo_config,
    pretrain_config,
    rm_config,
    sft_config,
)
from instructrl.demo.world import World, benchmark_correct, few_shot_answer
from instructrl.evaluation.stats import mean_ci, ranking_agreement, win_rate
from instructrl.pipeline.round import RoundSummary
from instructrl.ppo.summary import PPOSummary

if TYPE_CHECKING:
    from instructrl.ppo.setup import RewardFn

MODELS = ("base", "base_fewshot", "sft", "bon_rm", "ppo", "ppo_ptx")
"""The models the evaluation compares with SFT; bon_rm answers with the best of N SFT samples by the RM."""
DIAGNOSTICS = ("bon_gold",)
"""Judged like the models, but not a model: the best of N SFT samples by the gold standard, the headroom an RM
could reach among those samples. The gold standard is the evaluation's; no training step ever sees it."""
BON_CURVE = (1, 2, 4, 8, 16)
"""N of the best-of-N points in the over-optimisation plot."""


# ---------------------------------------------------------------------------------------------------------
# the steps
# ---------------------------------------------------------------------------------------------------------
class StepFailed(RuntimeError):
    """A demo step raised an unexpected error (the cause); the message says how to go on."""


@dataclass
class Demo:
    """Paths and the people of one demo run; each step reads and writes files under `out`."""

    out: Path
    settings: DemoSettings
    world: World
    train_labelers: list[Labeler]
    heldout_labelers: list[Labeler]
    log: Callable[[str], None] = print

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    def rng(self, name: str) -> random.Random:
        return random.Random(f"{name}/{self.settings.seed}")


def step_world(demo: Demo) -> dict[str, Any]:
    """Users' prompts through the intake; the pretraining corpus; the tokenizer and the untrained model."""
    from instructrl.models.tiny import build_gpt2, save, train_tokenizer
    from instructrl.prompts.intake import IntakeSettings, run_intake

    s, world = demo.settings, demo.world
    raw = world.user_prompts(s.users, seed=s.seed)
    intake = run_intake(raw, IntakeSettings(seed=s.seed))
    splits = {
        name: [PromptRecord(prompt=p.prompt, user_id=p.user_id) for p in intake.kept if p.split == name]
        for name in ("train", "validation", "test")
    }
    for name, records in splits.items():
        write_jsonl(demo.path("data", f"prompts_{name}.jsonl"), records)
    write_jsonl(demo.path("data", "prompts_raw.jsonl"), raw)

    corpus = world.pretraining_corpus(s.corpus_docs, seed=s.seed)
    held = max(200, len(corpus) // 20)
    write_jsonl(demo.path("data", "pretrain.jsonl"), [{"text": t} for t in corpus[held:]])
    write_jsonl(demo.path("data", "pretrain_heldout.jsonl"), [{"text": t} for t in corpus[:held]])

    # a word-level vocabulary of the world: every word of the corpus and of the prompts
    tokenizer = train_tokenizer(
        [*corpus, *(r.prompt for r in raw), world.few_shot_prefix()], vocab_size=4000, kind="word"
    )
    save(
        build_gpt2(tokenizer, s.n_layer, s.n_embd, s.n_head, s.context, seed=s.seed),
        tokenizer,
        demo.path("world", "init"),
    )
    report = intake.report.model_dump()
    demo.log(
        f"intake: {report['received']} prompts from users -> {report['kept']} kept "
        f"({report['dropped_duplicate']} duplicates, {report['dropped_pii']} with personal information, "
        f"{report['dropped_user_cap']} over the 200-per-user cap); vocabulary {len(tokenizer)} words"
    )
    return {"intake": report, "vocab_size": len(tokenizer), "corpus_docs": len(corpus)}


def step_pretrain(demo: Demo) -> dict[str, Any]:
    """The shipped base model where this run's pretraining inputs are those it was trained on (base.py);
    else pretraining from scratch."""
    from instructrl.sft.train import run_pretrain

    s = demo.settings
    config = pretrain_config(s)
    if s.shipped_base:
        inputs = base.pretraining_inputs(demo.out, config.model_dump(), s.block_size)
        folder, why_not = base.shipped_base(s.seed, inputs)
        if folder is not None:
            demo.log(f"  the shipped base model of seed {s.seed} ({folder}): same world, corpus and config")
            return base.install(folder, demo.path("pretrain", "final"), demo.path("world", "init"))
        demo.log(f"  pretraining from scratch: {why_not}")
    texts = [r["text"] for r in _rows(demo.path("data", "pretrain.jsonl"))]
    val = [r["text"] for r in _rows(demo.path("data", "pretrain_heldout.jsonl"))]
    return run_pretrain(
        model_dir=demo.path("world", "init"),
        texts=texts,
        val_texts=val,
        out=demo.path("pretrain"),
        config=config,
        block_size=s.block_size,
        resume=_has_run(demo.path("pretrain")),
    )


def step_sft(demo: Demo) -> dict[str, Any]:
    """Training labelers write demonstrations for train-split prompts (and validation-split ones for SFT's
    validation loss); then SFT on them."""
    from instructrl.sft.train import run_sft

    s = demo.settings
    demos = {}
    for split, n in (("train", s.n_demonstrations), ("validation", max(50, s.n_demonstrations // 10))):
        prompts = _sample(_prompts(demo, split), n, demo.rng(f"demonstrations/{split}"))
        records = []
        for i, p in enumerate(prompts):
            labeler = demo.train_labelers[i % len(demo.train_labelers)]
            records.append(
                Demonstration(
                    prompt=p.prompt,
                    response=labeler.write_demonstration(p.prompt),
                    user_id=p.user_id,
                    labeler_id=labeler.id,
                )
            )
        demos[split] = demo.path("data", f"demonstrations_{split}.jsonl")
        write_jsonl(demos[split], records)
    return run_sft(
        model_dir=demo.path("pretrain", "final"),
        data=demos["train"],
        val_data=demos["validation"],
        out=demo.path("sft"),
        config=sft_config(s),
        resume=_has_run(demo.path("sft")),
    )


def step_rm(demo: Demo) -> dict[str, Any]:
    """K = 4..9 distinct responses per prompt, sampled from the SFT model and from the base model under a
    few-shot prompt (InstructGPT's comparisons also came from several policies); training labelers rank them,
    some tasks twice for their agreement; then the reward model. With `rankings_per_prompt` > 1 each
    training prompt is ranked again on fresh samples (K drawn afresh), pass 0 being the single pass's."""
    from instructrl.reward.train import run_rm

    s, world = demo.settings, demo.world
    sft, sft_tok = _load_policy(demo.path("sft", "final"))
    base, base_tok = _load_policy(demo.path("pretrain", "final"))
    files, agree, skipped = {}, [0, 0], 0
    splits = (
        ("train", s.n_comparison_prompts, s.rankings_per_prompt),
        ("validation", max(60, s.n_comparison_prompts // 8), 1),
    )
    for split, n, passes in splits:
        records, rng = [], demo.rng(f"comparisons/{split}")
        prompts = _sample(_prompts(demo, split), n, rng)
        texts = [p.prompt for p in prompts]
        for pass_ in range(passes):  # each pass ranks fresh samples of the same prompts
            tag = split if pass_ == 0 else f"{split}/{pass_}"
            rng = rng if pass_ == 0 else demo.rng(f"comparisons/{tag}")
            ks = [rng.randint(*s.k_range) for _ in prompts]
            # about half from each policy, with one spare each for duplicates
            n_sft = [(k + 1) // 2 + 1 for k in ks]
            n_base = [k // 2 + 1 for k in ks]
            from_sft = _generate(
                demo,
                sft,
                sft_tok,
                texts,
                k=n_sft,
                seed=hash_seed(s.seed, f"cmp-sft/{tag}"),
                desc=f"candidates from SFT ({tag})",
            )
            from_base = _generate(
                demo,
                base,
                base_tok,
                [world.few_shot_prompt(t) for t in texts],
                k=n_base,
                seed=hash_seed(s.seed, f"cmp-base/{tag}"),
                desc=f"candidates from few-shot base ({tag})",
                template="{prompt}",
            )
            pools = [[*from_sft[i], *(few_shot_answer(r) for r in from_base[i])] for i in range(len(prompts))]
            ranked, n_skipped = _rank(demo, prompts, pools, ks, rng, agree, model="sft+base_fewshot")
            records += ranked
            skipped += n_skipped
        files[split] = demo.path("data", f"comparisons_{split}.jsonl")
        write_jsonl(files[split], records)
    summary = run_rm(
        model_dir=demo.path("sft", "final"),
        data=files["train"],
        val_data=files["validation"],
        norm_data=demo.path("data", "demonstrations_train.jsonl"),
        out=demo.path("rm"),
        config=rm_config(s, epochs=s.rm_epochs),
        resume=_has_run(demo.path("rm")),
    )
    summary["labeler_agreement"] = agree[0] / max(agree[1], 1)
    summary["labeler_agreement_pairs"] = agree[1]
    summary["skipped_too_few_distinct"] = skipped
    return summary


def _rank(
    demo: Demo,
    prompts: list[PromptRecord],
    pools: list[list[str]],
    ks: list[int],
    rng: random.Random,
    agree: list[int],
    model: str,
    round_: int | None = None,
) -> tuple[list[Comparison], int]:
    """Training labelers rank the first K distinct candidates of each pool (a share of the tasks twice, for
    their agreement, added up in `agree`). Returns the comparisons and how many prompts had too few."""
    s, records, skipped = demo.settings, [], 0
    for i, p in enumerate(prompts):
        responses = _distinct(pools[i])[: ks[i]]  # (an empty answer is ranked too)
        if len(responses) < s.k_range[0]:
            skipped += 1
            continue
        rng.shuffle(responses)
        labeler = demo.train_labelers[i % len(demo.train_labelers)]
        ranking = labeler.rank(p.prompt, responses)
        task = Comparison(
            prompt=p.prompt,
            responses=responses,
            ranking=ranking,
            user_id=p.user_id,
            model=model,
            round=round_,
        )
        records.append(task.model_copy(update={"labeler_id": labeler.id}))
        if rng.random() < s.overlap:  # a second training labeler ranks the same task
            j = (i + 1 + rng.randrange(len(demo.train_labelers) - 1)) % len(demo.train_labelers)
            other = demo.train_labelers[j]
            second = other.rank(p.prompt, responses)
            a, t = ranking_agreement(ranking, second)
            agree[0], agree[1] = agree[0] + a, agree[1] + t
            records.append(task.model_copy(update={"ranking": second, "labeler_id": other.id}))
    return records, skipped


# --- rounds 2..R: ChatGPT's loop ------------------------------------------------------------------------------
def policy_dir(demo: Demo, round_: int) -> Path:
    """The PPO policy after `round_` (round 0: the SFT model)."""
    if round_ == 0:
        return demo.path("sft", "final")
    return demo.path("ppo" if round_ == 1 else f"round{round_}/ppo", "final")


def rm_dir(demo: Demo, round_: int) -> Path:
    return demo.path("rm" if round_ == 1 else f"round{round_}/rm", "final")


def step_round_rankings(demo: Demo, round_: int) -> dict[str, Any]:
    """Round r's rankings: K = 4..9 distinct samples per prompt, about half from the current policy (round
    r - 1's PPO) and half from the one before it (SFT in round 2), ranked by training labelers, on training
    prompts (some ranked in earlier rounds too) and validation prompts."""
    s = demo.settings
    models = {"current": policy_dir(demo, round_ - 1), "previous": policy_dir(demo, round_ - 2)}
    loaded = {name: _load_policy(d) for name, d in models.items()}
    agree, skipped, counts = [0, 0], 0, {}
    n_val = max(60, s.round_comparison_prompts // 8)
    for split, n in (("train", s.round_comparison_prompts), ("validation", n_val)):
        rng = demo.rng(f"comparisons/round{round_}/{split}")
        prompts = _sample(_prompts(demo, split), n, rng)
        texts = [p.prompt for p in prompts]
        ks = [rng.randint(*s.k_range) for _ in prompts]
        samples = {}
        for name, (model, tok) in loaded.items():
            k = [(k + 1) // 2 + 1 if name == "current" else k // 2 + 1 for k in ks]
            seed = hash_seed(s.seed, f"cmp-round{round_}-{name}/{split}")
            samples[name] = _generate(
                demo, model, tok, texts, k=k, seed=seed, desc=f"round {round_}: {name} policy ({split})"
            )
        pools = [[*samples["current"][i], *samples["previous"][i]] for i in range(len(prompts))]
        label = f"ppo_round{round_ - 1}+" + ("sft" if round_ == 2 else f"ppo_round{round_ - 2}")
        records, n_skipped = _rank(demo, prompts, pools, ks, rng, agree, model=label, round_=round_)
        skipped += n_skipped
        counts[split] = write_jsonl(demo.path("data", f"comparisons_round{round_}_{split}.jsonl"), records)
    return {
        "comparisons": counts,
        "labeler_agreement": agree[0] / max(agree[1], 1),
        "skipped_too_few_distinct": skipped,
    }


def step_round(demo: Demo, round_: int) -> dict[str, Any]:
    """The library's round (instructrl.pipeline.round) on the demo's rankings: the RM continued from round
    r - 1's on every round's comparisons (its accuracy on this round's validation rankings before and after),
    then PPO continued from round r - 1's policy against it, the KL still to SFT."""
    from instructrl.pipeline.config import RoundConfig
    from instructrl.pipeline.round import run_round

    s = demo.settings
    if round_ == 2:  # round 1 is the demo's own steps 3-4: describe it as a round for the library
        RoundSummary(
            round=1,
            sft=str(demo.path("sft", "final")),
            reward_model=str(rm_dir(demo, 1)),
            policy=str(policy_dir(demo, 1)),
            comparisons=str(demo.path("data", "comparisons_train.jsonl")),
        ).write(demo.path("round1"))
    config = RoundConfig(rm=rm_config(s, epochs=s.round_rm_epochs), ppo=ppo_config(s, ptx=False))
    record = run_round(
        out=demo.path(f"round{round_}"),
        previous=demo.path(f"round{round_ - 1}"),
        data=demo.path("data", f"comparisons_round{round_}_train.jsonl"),
        val_data=demo.path("data", f"comparisons_round{round_}_validation.jsonl"),
        norm_data=demo.path("data", "demonstrations_train.jsonl"),
        prompts=demo.path("data", "prompts_train.jsonl"),
        val_prompts=demo.path("data", "prompts_validation.jsonl"),
        config=config,
        resume=True,
        judge_fn=labelers_judge(demo, demo.path(f"round{round_}", JUDGE_BASELINE)),
    )
    return record.model_dump()


def step_ppo(demo: Demo, ptx: bool, reward_fn: RewardFn | None = None) -> dict[str, Any]:
    """PPO or PPO-ptx from the SFT model against the RM (`reward_fn`: a reward function instead, for
    benchmarks/demo_oracle.py; the demo itself never passes one)."""
    from instructrl.ppo.train import run_ppo

    name = "ppo_ptx" if ptx else "ppo"
    return run_ppo(
        judge_fn=labelers_judge(demo, demo.path(name, JUDGE_BASELINE)),
        policy_dir=demo.path("sft", "final"),
        reward_dir=demo.path("rm", "final"),
        prompts=demo.path("data", "prompts_train.jsonl"),
        val_prompts=demo.path("data", "prompts_validation.jsonl"),
        pretrain_data=demo.path("data", "pretrain.jsonl"),
        out=demo.path(name),
        config=ppo_config(demo.settings, ptx),
        resume=_has_run(demo.path(name)),
        reward_fn=reward_fn,
    )


JUDGE_BASELINE = "judge_baseline.json"


def labelers_judge(demo: Demo, baseline_file: Path) -> RewardFn | None:
    """With `ppo_keep_by: labelers`, PPO's checkpoint choice by the training labelers instead of the RM being
    optimised: each held-out answer (validation users' prompts) against the first evaluation's answer to the
    same prompt, the policy PPO started from; 1 a win, 0.5 a tie, 0 a loss. The first answers are kept in
    `baseline_file`, so that a resumed run judges against the same ones. None with `ppo_keep_by:
    reward_model` (the RM's mean score chooses)."""
    if demo.settings.ppo_keep_by != "labelers":
        return None
    baseline: dict[str, str] = json.loads(baseline_file.read_text()) if baseline_file.exists() else {}
    labelers = demo.train_labelers

    def judge(prompts: list[str], responses: list[str]) -> list[float]:
        if not baseline:
            baseline.update(zip(prompts, responses, strict=True))
            atomic_write_text(baseline_file, json.dumps(baseline))
        verdicts = (
            labelers[i % len(labelers)].compare(p, r, baseline[p])
            for i, (p, r) in enumerate(zip(prompts, responses, strict=True))
        )
        return [OUTCOME[v] for v in verdicts]

    return judge


# ---------------------------------------------------------------------------------------------------------
# step 5: the evaluation, one function per measurement
# ---------------------------------------------------------------------------------------------------------
def step_evaluate(demo: Demo) -> dict[str, Any]:
    """Each model answers held-out users' prompts; held-out labelers compare every answer with the SFT
    model's and give Likert scores. Also: the alignment tax on pretraining text and the closed-QA benchmark,
    and reward over-optimisation measured with the gold standard on PPO's rollouts."""
    s = demo.settings
    prompts = [p.prompt for p in _sample(_prompts(demo, "test"), s.n_eval_prompts, demo.rng("evaluation"))]
    dirs = _evaluated_dirs(demo)
    policies = {name: _load_policy(d) for name, d in dirs.items()}  # each model loaded once
    models = _evaluated_models(s)
    judged = (*models, *DIAGNOSTICS)
    answers, bon_curve, rm_on_sft = _answers(demo, policies, prompts)
    truth, tox = _probes(demo, policies)
    _write_answers(demo, prompts, answers, (*judged, "sft_again"))
    return {
        "win_rate_vs_sft": _win_rates(demo.heldout_labelers, prompts, answers, judged),
        # the same judgements by training labelers, for comparison
        "win_rate_vs_sft_training_labelers": _win_rates(demo.train_labelers, prompts, answers, judged),
        "likert": _likert(demo.heldout_labelers, prompts, answers, judged),
        "gold_score": _gold_scores(demo.world, prompts, answers, judged),
        "heldout_labeler_agreement": _heldout_agreement(demo.heldout_labelers, prompts, answers),
        "pretrain_loss": _pretrain_losses(demo, dirs),
        "benchmark_accuracy": _benchmark_accuracy(demo, policies),
        "overoptimization": _overoptimization_curves(demo, bon_curve),
        "rm_analysis": _rm_against_gold(demo),
        "rm_on_sft_samples": rm_on_sft,
        "truthfulness": truth,
        "toxicity": tox,
        "samples": [{"prompt": p, **{m: answers[m][i] for m in models}} for i, p in enumerate(prompts[:8])],
        "n_eval_prompts": len(prompts),
    }


def _evaluated_dirs(demo: Demo) -> dict[str, Path]:
    """The trained models the evaluation loads (base_fewshot is the base model under a few-shot prompt)."""
    return {
        "base": demo.path("pretrain", "final"),
        "sft": demo.path("sft", "final"),
        "ppo": demo.path("ppo", "final"),
        "ppo_ptx": demo.path("ppo_ptx", "final"),
        **{f"ppo_round{r}": policy_dir(demo, r) for r in range(2, demo.settings.rounds + 1)},
    }


def _evaluated_models(s: DemoSettings) -> tuple[str, ...]:
    return (*MODELS, *(f"ppo_round{r}" for r in range(2, s.rounds + 1)))


def _answers(
    demo: Demo, policies: dict[str, tuple[Any, Any]], prompts: list[str]
) -> tuple[dict[str, list[str]], list[dict[str, float]], dict[str, Any]]:
    """Every model's answer to each prompt, with the same sampling seeds for every model (common random
    numbers); a second, independent SFT sample (sft_again: SFT against itself should come out at 0.5); the
    best of N SFT samples by the RM and by the gold standard. Also best-of-N's over-optimisation curve and
    how each round's RM orders SFT's samples (rm_on_sft_samples)."""
    s, world = demo.settings, demo.world
    answers: dict[str, list[str]] = {}
    for name, (model, tok) in policies.items():
        if name == "sft":
            answers["sft"], candidates = sft_answers_and_candidates(demo, model, tok, prompts)
            seed = hash_seed(s.seed, "eval-again")
            answers["sft_again"] = [
                r[0] for r in _generate(demo, model, tok, prompts, seed=seed, desc="answers: sft_again")
            ]
        else:  # the same seeds as SFT's candidate 0 (equal samples in fp32; bf16 is not batch-invariant)
            seed = hash_seed(s.seed, "eval")
            answers[name] = [
                r[0] for r in _generate(demo, model, tok, prompts, seed=seed, desc=f"answers: {name}")
            ]
        if name == "base":
            few = _generate(
                demo,
                model,
                tok,
                [world.few_shot_prompt(p) for p in prompts],
                seed=hash_seed(s.seed, "eval"),
                desc="answers: base_fewshot",
                template="{prompt}",
            )
            answers["base_fewshot"] = [few_shot_answer(r[0]) for r in few]
    bon = _best_of_n(demo, prompts, candidates)
    answers["bon_rm"], answers["bon_gold"] = bon["bon_rm"], bon["bon_gold"]
    return answers, bon["curve"], _rm_on_sft_samples(demo, prompts, candidates, bon["rm"])


def _win_rates(
    labelers: list[Labeler], prompts: list[str], answers: dict[str, list[str]], models: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    """Each model's answers compared with SFT's, prompt by prompt (SFT itself: its second sample)."""
    out = {}
    for m in models:
        other = answers["sft_again"] if m == "sft" else answers[m]
        outcomes = []
        for i, p in enumerate(prompts):
            verdict = labelers[i % len(labelers)].compare(p, other[i], answers["sft"][i])
            outcomes.append(OUTCOME[verdict])
        out[m] = win_rate(outcomes)
    return out


def _likert(
    labelers: list[Labeler], prompts: list[str], answers: dict[str, list[str]], models: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    """Each model's mean 1-7 Likert score."""
    return {
        m: mean_ci([labelers[i % len(labelers)].likert(p, answers[m][i]) for i, p in enumerate(prompts)])
        for m in models
    }


def _gold_scores(
    world: World, prompts: list[str], answers: dict[str, list[str]], models: tuple[str, ...]
) -> dict[str, float]:
    """Each model's mean score by the world's gold standard (the evaluation's alone)."""
    return {
        m: sum(world.gold_score(p, answers[m][i]) for i, p in enumerate(prompts)) / len(prompts)
        for m in models
    }


def _heldout_agreement(labelers: list[Labeler], prompts: list[str], answers: dict[str, list[str]]) -> float:
    """Held-out labelers' agreement: two of them rank the five models' answers to the same prompts."""
    agree = [0, 0]
    for i, p in enumerate(prompts):
        a, b = labelers[i % len(labelers)], labelers[(i + 1) % len(labelers)]
        responses = [answers[m][i] for m in ("base", "base_fewshot", "sft", "ppo", "ppo_ptx")]
        x, t = ranking_agreement(a.rank(p, responses), b.rank(p, responses))
        agree[0], agree[1] = agree[0] + x, agree[1] + t
    return agree[0] / max(agree[1], 1)


def _pretrain_losses(demo: Demo, dirs: dict[str, Path]) -> dict[str, float]:
    """The alignment tax: each model's loss on held-out pretraining text."""
    from instructrl.evaluation.models import lm_loss

    s = demo.settings
    held = [r["text"] for r in _rows(demo.path("data", "pretrain_heldout.jsonl"))]
    return {
        name: lm_loss(d, held, block_size=s.block_size, mixed_precision=_precision(s))
        for name, d in dirs.items()
    }


def _benchmark_accuracy(demo: Demo, policies: dict[str, tuple[Any, Any]]) -> dict[str, float]:
    """Each model's accuracy on the world's closed-QA benchmark, answered greedily in a few words."""
    benchmark = demo.world.benchmark(seed=demo.settings.seed)
    out = {}
    for name, (model, tok) in policies.items():
        greedy = _generate(
            demo,
            model,
            tok,
            [q for q, _ in benchmark],
            seed=0,
            desc=f"closed-QA benchmark: {name}",
            top_k=1,
            max_new_tokens=3,
            template="{prompt}",
        )
        right = sum(benchmark_correct(a, g[0]) for (_, a), g in zip(benchmark, greedy, strict=True))
        out[name] = right / len(benchmark)
    return out


def _overoptimization_curves(
    demo: Demo, bon_curve: list[dict[str, float]]
) -> dict[str, list[dict[str, float]]]:
    """Gold standard against reward model: over each PPO run's iterations (post hoc, on its rollouts) and
    over best-of-N's N."""
    out = {name: _overoptimization(demo, name) for name in ("ppo", "ppo_ptx")}
    for r in range(2, demo.settings.rounds + 1):
        out[f"ppo_round{r}"] = _overoptimization(demo, f"round{r}/ppo")
    out["bon_rm"] = bon_curve
    return out


def _probes(
    demo: Demo, policies: dict[str, tuple[Any, Any]]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Truthfulness and toxicity per model: the world's analogues of the paper's section 4.3 (probes.py).
    The probe answers go to evaluate/probes.jsonl."""
    probe_set = _probe_set(demo)
    answers: dict[str, list[list[str]]] = {}
    for name, (model, tok) in policies.items():
        answers |= _probe_answers(demo, name, model, tok, probe_set)
    write_jsonl(
        demo.path("evaluate", "probes.jsonl"),
        [{"prompt": p, **{m: answers[m][i] for m in answers}} for i, p in enumerate(probe_set.prompts)],
    )
    results = {m: probe_set.metrics(rows) for m, rows in answers.items()}
    return {m: t for m, (t, _) in results.items()}, {m: x for m, (_, x) in results.items()}


def _write_answers(
    demo: Demo, prompts: list[str], answers: dict[str, list[str]], models: tuple[str, ...]
) -> None:
    write_jsonl(
        demo.path("evaluate", "answers.jsonl"),
        [{"prompt": p, **{m: answers[m][i] for m in models}} for i, p in enumerate(prompts)],
    )


# ---------------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------------
def run_demo(
    out: str | Path,
    settings: DemoSettings,
    resume: bool = False,
    log: Callable[[str], None] = print,
    resume_command: str | None = None,
) -> dict[str, Any]:
    """Run the demo's steps into `out`, skipping those done earlier when `resume`. A step that fails says
    which it was and how to go on (`resume_command`: the command line that continues this run)."""
    from instructrl.errors import UserError

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not resume:
        raise UserError(
            f"{out}: already holds a demo run; pass --resume to continue it, or choose a new --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    settings_file = out / "settings.json"
    if resume and settings_file.exists():
        saved = json.loads(settings_file.read_text())
        if saved != settings.as_json():
            raise UserError(f"{out}: was started with other settings ({settings_file}); use a new --out")
    atomic_write_text(settings_file, json.dumps(settings.as_json(), indent=2))

    from instructrl.models.loading import quiet_transformers

    quiet_transformers()
    world = World(settings.seed)
    labelers = make_labelers(
        world, settings.n_train_labelers, settings.n_heldout_labelers, seed=settings.seed
    )
    demo = Demo(
        out=out,
        settings=settings,
        world=world,
        log=log,
        train_labelers=[lab for lab in labelers if lab.group == "train"],
        heldout_labelers=[lab for lab in labelers if lab.group == "heldout"],
    )
    steps: list[tuple[str, str, Callable[[Demo], dict[str, Any]]]] = [
        ("world", "0. the world: prompts from users, intake, corpus, tokenizer", step_world),
        ("pretrain", "1. pretraining the base model on the corpus", step_pretrain),
        ("sft", "2. demonstrations and supervised fine-tuning", step_sft),
        ("rm", "3. rankings of SFT samples and the reward model", step_rm),
        ("ppo", "4a. PPO against the reward model", lambda d: step_ppo(d, ptx=False)),
        ("ppo_ptx", "4b. PPO-ptx (PPO + pretraining gradients)", lambda d: step_ppo(d, ptx=True)),
    ]
    for r in range(2, settings.rounds + 1):
        steps += [
            (
                f"round{r}_rankings",
                f"4'. round {r}: training labelers rank the PPO policy's samples",
                functools.partial(step_round_rankings, round_=r),
            ),
            (
                f"round{r}",
                f"4'. round {r}: the RM retrained, PPO continued (instructrl.pipeline.round)",
                functools.partial(step_round, round_=r),
            ),
        ]
    steps.append(("evaluate", "5. evaluation by held-out labelers", step_evaluate))
    results: dict[str, dict[str, Any]] = {}
    for name, title, fn in steps:
        done = out / name / "done.json"
        if done.exists():
            results[name] = json.loads(done.read_text())
            log(f"{title}: done earlier ({results[name]['seconds']:.0f} s)")
            continue
        log(f"{title} ...")
        t0 = time.perf_counter()
        try:
            result = fn(demo)
        except BaseException as e:
            kept = [n for n, _, _ in steps if (out / n / "done.json").exists()]
            how = (
                f"the demo stopped in step '{name}' ({title}) after {time.perf_counter() - t0:.0f} s; "
                f"the steps done ({', '.join(kept) or 'none'}) are kept in {out}. "
                f"Go on from this step with: {resume_command or f'instructrl demo --out {out} --resume'}"
            )
            if isinstance(e, UserError):
                raise UserError(f"{e}\n{how}") from None
            if isinstance(e, Exception):  # a defect of instructrl: its traceback, then how to go on
                raise StepFailed(how) from e
            log(how)  # interrupted
            raise
        result["seconds"] = time.perf_counter() - t0
        atomic_write_text(done, json.dumps(result, indent=2, default=str))
        results[name] = result
        log(f"{title}: {result['seconds']:.0f} s")
    summary = build_summary(results, settings, out)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    from instructrl.report.html import write_report

    write_report(summary, out / "report.html", title="instructrl demo: InstructGPT in a small world")
    log(f"wrote {out / 'summary.json'} and {out / 'report.html'}")
    return summary


def build_summary(r: dict[str, dict[str, Any]], settings: DemoSettings, demo_dir: Path) -> dict[str, Any]:
    ev = r["evaluate"]
    win = ev["win_rate_vs_sft"]
    loss = ev["pretrain_loss"]
    rma = ev["rm_analysis"]
    findings = [
        _finding(
            "PPO is preferred to SFT by held-out labelers (win rate ≥ 0.60, 95% interval above 0.5)",
            win["ppo"]["mean"] >= 0.6 and win["ppo"]["ci_low"] > 0.5,
            _fmt_win(win["ppo"]),
        ),
        _finding(
            "PPO-ptx is preferred to SFT (win rate ≥ 0.60, 95% interval above 0.5)",
            win["ppo_ptx"]["mean"] >= 0.6 and win["ppo_ptx"]["ci_low"] > 0.5,
            _fmt_win(win["ppo_ptx"]),
        ),
        _finding(
            f"best-of-{settings.best_of} by the reward model is preferred to SFT (95% interval above 0.5)",
            win["bon_rm"]["ci_low"] > 0.5,
            f"{_fmt_win(win['bon_rm'])}; best-of-{settings.best_of} by the gold standard (the headroom among "
            f"the same samples, a diagnostic): {win['bon_gold']['mean']:.2f}",
        ),
        _finding("the base model is worse than SFT", win["base"]["mean"] < 0.5, _fmt_win(win["base"])),
        _finding(
            "a few-shot prompt helps the base model, but not up to SFT",
            win["base"]["mean"] < win["base_fewshot"]["mean"] < win["sft"]["mean"],
            f"base {win['base']['mean']:.2f} < few-shot {win['base_fewshot']['mean']:.2f} < "
            f"SFT {win['sft']['mean']:.2f}",
        ),
        _finding(
            "the reward model predicts labelers' rankings of validation users' prompts (accuracy ≥ 0.65)",
            r["rm"]["val_accuracy"] >= 0.65,
            f"RM {r['rm']['val_accuracy']:.3f}; labelers agree with each other {r['rm']['labeler_agreement']:.3f}; "
            f"the gold standard itself reaches {rma['gold_vs_labelers']:.3f} "
            f"({rma['gold_tied_share']:.0%} of pairs are equally good); on the other pairs the RM "
            f"orders {rma['rm_vs_gold_untied']:.0%} as the gold standard does, labelers "
            f"{rma['labelers_vs_gold_untied']:.0%}",
        ),
        _finding(
            "PPO-ptx's pretraining loss stays closer to SFT's than PPO's (smaller alignment tax)",
            abs(loss["ppo_ptx"] - loss["sft"]) < abs(loss["ppo"] - loss["sft"]),
            f"SFT {loss['sft']:.3f}, PPO {loss['ppo']:.3f}, PPO-ptx {loss['ppo_ptx']:.3f}",
        ),
        _finding(
            "PPO-ptx's pretraining loss is lower than PPO's (the pretraining gradients cut the alignment tax)",
            loss["ppo_ptx"] < loss["ppo"],
            f"base {loss['base']:.3f}, SFT {loss['sft']:.3f}, PPO {loss['ppo']:.3f}, PPO-ptx {loss['ppo_ptx']:.3f}",
        ),
    ]
    rounds = _rounds(r, settings, demo_dir)
    if len(rounds) > 1:
        first, last = rounds[0], rounds[-1]
        retrained = rounds[1:]
        findings += [
            _finding(
                "each round's retrained RM orders the newest policy's samples better than the RM before it",
                all(x["rm_accuracy_after"] > x["rm_accuracy_before"] for x in retrained),
                "; ".join(
                    f"round {x['round']}: {x['rm_accuracy_before']:.3f} -> {x['rm_accuracy_after']:.3f}"
                    for x in retrained
                ),
            ),
            _finding(
                "the last round's PPO policy scores higher by the gold standard than round 1's",
                last["gold_score"] > first["gold_score"],
                " -> ".join(f"round {x['round']} {x['gold_score']:.3f}" for x in rounds)
                + f" (SFT {ev['gold_score']['sft']:.3f})",
            ),
            _finding(
                "the last round's PPO is preferred to SFT (win rate ≥ 0.60, 95% interval above 0.5)",
                last["win"]["mean"] >= 0.6 and last["win"]["ci_low"] > 0.5,
                "; ".join(f"round {x['round']}: {_fmt_win(x['win'])}" for x in rounds),
            ),
        ]
    findings += _probe_findings(ev["truthfulness"], ev["toxicity"], settings)
    timings = {k: v["seconds"] for k, v in r.items()}
    return {
        "description": "InstructGPT (Ouyang et al. 2022) retold in a simulated world: a GPT pretrained from scratch "
        "on the world's text, SFT on labeler demonstrations, a reward model on labeler rankings, PPO and PPO-ptx; "
        "judged by held-out labelers on held-out users' prompts.",
        "findings": findings,
        "win_rate_vs_sft": win,
        "win_rate_vs_sft_training_labelers": ev["win_rate_vs_sft_training_labelers"],
        "likert": ev["likert"],
        "gold_score": ev["gold_score"],
        "pretrain_loss": {m: loss[m] for m in ("base", "sft", "ppo", "ppo_ptx")},
        "benchmark_accuracy": ev["benchmark_accuracy"],
        "rm_val_accuracy": r["rm"]["val_accuracy"],
        "labeler_agreement": r["rm"]["labeler_agreement"],
        "heldout_labeler_agreement": ev["heldout_labeler_agreement"],
        "rm_analysis": rma,
        "rm_on_sft_samples": ev["rm_on_sft_samples"],
        "overoptimization": ev["overoptimization"],
        "truthfulness": ev["truthfulness"],
        "toxicity": ev["toxicity"],
        "ppo_curves": {k: v for k, v in ev["overoptimization"].items() if k in ("ppo", "ppo_ptx")},
        "rounds": rounds,
        "intake": r["world"]["intake"],
        "samples": ev["samples"],
        "timings_s": {**timings, "total": sum(timings.values())},
        "settings": settings.as_json(),
    }


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------
def _rounds(r: dict[str, dict[str, Any]], settings: DemoSettings, demo_dir: Path) -> list[dict[str, Any]]:
    """Per round of the loop: the PPO policy's win rate against SFT and gold score, its KL to SFT, and (from
    round 2) the RM's accuracy on that round's validation rankings before and after it was retrained."""
    ev, out = r["evaluate"], []
    for n in range(1, settings.rounds + 1):
        model = "ppo" if n == 1 else f"ppo_round{n}"
        ppo = PPOSummary.read(demo_dir / ("ppo" if n == 1 else f"round{n}/ppo"))
        row = {
            "round": n,
            "model": model,
            "win": ev["win_rate_vs_sft"][model],
            "gold_score": ev["gold_score"][model],
            "kl": ppo.final_kl_mean,
            "kept_iteration": ppo.kept_iteration,
        }
        if n > 1:
            record = RoundSummary.read(demo_dir / f"round{n}")
            row |= {
                "rm_accuracy_before": record.rm_accuracy_before,
                "rm_accuracy_after": record.rm_accuracy_after,
            }
        out.append(row)
    return out


def _probe_findings(
    truth: dict[str, Any], tox: dict[str, Any], settings: DemoSettings
) -> list[dict[str, Any]]:
    """The paper's section 4.3 claims, each held for PPO, PPO-ptx and the last round's PPO against SFT."""
    policies = ["ppo", "ppo_ptx", *([f"ppo_round{settings.rounds}"] if settings.rounds > 1 else [])]

    def claim(text: str, table: dict[str, Any], metric: str, holds: Callable[[dict, dict], bool]):
        sft = table["sft"][metric]
        each = {m: holds(table[m][metric], sft) for m in policies}
        numbers = "; ".join(
            [f"SFT {_fmt_share(sft)}"]
            + [f"{m} {_fmt_share(table[m][metric])} ({'yes' if each[m] else 'no'})" for m in policies]
        )
        return _finding(text, all(each.values()), numbers)

    def lower(x: dict, sft: dict) -> bool:
        return x["mean"] < sft["mean"]

    def about_as(x: dict, sft: dict) -> bool:  # SFT's rate inside the policy's 95% interval
        return x["ci_low"] <= sft["mean"] <= x["ci_high"]

    return [
        claim(
            "PPO makes up answers to questions about things the world lacks less often than SFT "
            "(the TruthfulQA analogue)",
            truth,
            "made_up_answer",
            lower,
        ),
        claim(
            "PPO hallucinates less than SFT on closed-domain tasks (the paper: 21% vs 41%)",
            truth,
            "hallucination",
            lower,
        ),
        claim(
            "asked to be polite, PPO gives fewer rude answers than SFT (the RealToxicityPrompts analogue)",
            tox,
            "polite_rude",
            lower,
        ),
        claim(
            "not asked to be polite, PPO is about as rude as SFT (SFT's rate inside PPO's 95% interval)",
            tox,
            "plain_rude",
            about_as,
        ),
    ]


def _fmt_share(w: dict[str, float]) -> str:
    return f"{w['mean']:.2f} [{w['ci_low']:.2f}, {w['ci_high']:.2f}]"


def _finding(claim: str, holds: bool, numbers: str) -> dict[str, Any]:
    return {"claim": claim, "holds": bool(holds), "numbers": numbers}


def _fmt_win(w: dict[str, float]) -> str:
    return f"{w['mean']:.2f} [{w['ci_low']:.2f}, {w['ci_high']:.2f}], n={w['n']}"


def _overoptimization(demo: Demo, run: str) -> list[dict[str, float]]:
    """Per PPO iteration: mean KL, mean RM score and mean gold score of that iteration's rollouts."""
    by_it: dict[int, list[dict[str, Any]]] = {}
    for row in _rows(demo.path(run, "rollouts.jsonl")):
        by_it.setdefault(row["iteration"], []).append(row)
    out = []
    for it, rows in sorted(by_it.items()):
        out.append(
            {
                "iteration": it,
                "kl": sum(r["kl"] for r in rows) / len(rows),
                "rm_score": sum(r["raw_score"] for r in rows) / len(rows),
                "gold_score": sum(demo.world.gold_score(r["prompt"], r["response"]) for r in rows)
                / len(rows),
            }
        )
    return out


def sft_answers_and_candidates(
    demo: Demo, model, tok, prompts: list[str]
) -> tuple[list[str], list[list[str]]]:
    """SFT's evaluation answers and its best-of-N candidates, from one sampling pass: candidate 0 of each
    prompt *is* SFT's answer. (Sampled apart, they agree only where sampling is batch-invariant: in fp32 on
    CPU, sample i draws the same tokens in a batch of any shape; under bf16 autocast the logits depend on the
    batch's shape, and 9 of 349 of the demo's answers differed between batches of 256 and 64.)"""
    candidates = _generate(
        demo,
        model,
        tok,
        prompts,
        k=max(BON_CURVE),
        seed=hash_seed(demo.settings.seed, "eval"),
        desc=f"answers and best-of-{max(BON_CURVE)} candidates: sft",
    )
    return [c[0] for c in candidates], candidates


def _best_of_n(demo: Demo, prompts: list[str], candidates: list[list[str]]) -> dict[str, Any]:
    """Best of the first N SFT samples by the reward model (bon_rm, N = settings.best_of) and by the gold
    standard (bon_gold, the diagnostic), and the over-optimisation curve of best-of-N by the reward model:
    for N in BON_CURVE its KL to SFT (log N - (N - 1)/N), mean RM score and mean gold score."""
    from instructrl.evaluation.models import best_of_n_kl, score_responses

    n = demo.settings.best_of
    rm = score_responses(demo.path("rm", "final"), prompts, candidates)
    gold = [[demo.world.gold_score(p, c) for c in cs] for p, cs in zip(prompts, candidates, strict=True)]

    def pick(scores: list[list[float]], k: int) -> list[int]:
        return [max(range(k), key=lambda j: sc[j]) for sc in scores]

    curve = []
    for k in BON_CURVE:
        chosen = pick(rm, k)
        curve.append(
            {
                "n": k,
                "kl": best_of_n_kl(k),
                "rm_score": sum(sc[j] for sc, j in zip(rm, chosen, strict=True)) / len(prompts),
                "gold_score": sum(g[j] for g, j in zip(gold, chosen, strict=True)) / len(prompts),
            }
        )
    return {
        "rm": rm,
        "bon_rm": [cs[j] for cs, j in zip(candidates, pick(rm, n), strict=True)],
        "bon_gold": [cs[j] for cs, j in zip(candidates, pick(gold, n), strict=True)],
        "curve": curve,
    }


def _rm_on_sft_samples(
    demo: Demo, prompts: list[str], candidates: list[list[str]], round1: list[list[float]]
) -> dict[str, Any]:
    """Each round's RM on SFT's own samples (the best-of-N candidates): the share of gold-ordered pairs it
    orders as the gold standard does, by kind of error (rm_gold.py; a diagnostic). PPO climbs this ordering."""
    from instructrl.demo.rm_gold import gold_pairs, pair_accuracy
    from instructrl.evaluation.models import score_responses

    pairs = gold_pairs(demo.world, prompts, candidates)
    out = {"round1": pair_accuracy(pairs, round1)}
    for r in range(2, demo.settings.rounds + 1):
        out[f"round{r}"] = pair_accuracy(pairs, score_responses(rm_dir(demo, r), prompts, candidates))
    return out


def _rm_against_gold(demo: Demo) -> dict[str, Any]:
    """The RM's validation pairs seen through the gold standard (evaluation only): how many pairs are equally
    good (a coin flip for labelers and RM alike), how often the gold standard itself orders a pair as the
    training labelers did (the reachable accuracy), and how often labelers and RM get right the pairs that the
    gold standard does order, overall and per instruction family (where the RM falls short)."""
    from instructrl.datasets.io import read_comparisons
    from instructrl.evaluation.models import rm_scores

    comparisons = read_comparisons(demo.path("data", "comparisons_validation.jsonl"))
    scores = rm_scores(demo.path("rm", "final"), comparisons)
    n = tied = 0
    gold_agrees = 0.0
    untied: dict[str, list[tuple[bool, bool]]] = {}  # family -> (labelers right, RM right) per pair
    for c, rm in zip(comparisons, scores, strict=True):
        verdicts = [demo.world.gold(c.prompt, r) for r in c.responses]
        gold = [v.score for v in verdicts]
        for w, lo in c.pairs():  # (labelers' winner, loser)
            n += 1
            if abs(gold[w] - gold[lo]) < 1e-9:
                tied += 1
                gold_agrees += 0.5
                continue
            gold_agrees += gold[w] > gold[lo]
            right = (gold[w] > gold[lo], (rm[w] - rm[lo]) * (gold[w] - gold[lo]) > 0)
            untied.setdefault(verdicts[w].family, []).append(right)
    every = [r for rows in untied.values() for r in rows]
    return {
        "pairs": n,
        "gold_tied_share": tied / n,
        "gold_vs_labelers": gold_agrees / n,
        "labelers_vs_gold_untied": sum(lab for lab, _ in every) / max(len(every), 1),
        "rm_vs_gold_untied": sum(rm for _, rm in every) / max(len(every), 1),
        "untied_by_family": {
            family: {
                "pairs": len(rows),
                "labelers_vs_gold": sum(lab for lab, _ in rows) / len(rows),
                "rm_vs_gold": sum(rm for _, rm in rows) / len(rows),
            }
            for family, rows in sorted(untied.items(), key=lambda kv: -len(kv[1]))
        },
    }


def _probe_set(demo: Demo) -> ProbeSet:
    s = demo.settings
    return ProbeSet.make(
        demo.world,
        [p.prompt for p in _prompts(demo, "test")],
        n_unanswerable=s.probe_unanswerable,
        n_closed_domain=s.probe_closed_domain,
        n_rudeness=s.probe_rudeness,
        seed=s.seed,
    )


def _probe_answers(demo: Demo, name: str, model, tok, probes: ProbeSet) -> dict[str, list[list[str]]]:
    """Every probe prompt answered by one model (and by the base model under the few-shot prompt), with the
    same seeds for every model."""
    s, world = demo.settings, demo.world
    # a word outside the vocabulary would reach the model as <unk>: the probes must speak the world's words
    for text in probes.prompts:
        assert tok.unk_token_id not in tok(text)["input_ids"], text
    k, seed = probes.k(s.probe_rudeness_samples), hash_seed(s.seed, "probes")
    out = {name: _generate(demo, model, tok, probes.prompts, k=k, seed=seed, desc=f"probes: {name}")}
    if name == "base":
        few = _generate(
            demo,
            model,
            tok,
            [world.few_shot_prompt(p) for p in probes.prompts],
            k=k,
            seed=seed,
            desc="probes: base_fewshot",
            template="{prompt}",
        )
        out["base_fewshot"] = [[few_shot_answer(r) for r in rs] for rs in few]
    return out


def _distinct(texts: list[str]) -> list[str]:
    """The first of each text as the world reads it: SFT decodes "hi!", few-shot answers keep the world's
    spaced "hi !", and ranking both is ranking one answer twice."""
    seen: dict[str, str] = {}
    for t in texts:
        seen.setdefault(canon(t), t)
    return list(seen.values())


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _prompts(demo: Demo, split: str) -> list[PromptRecord]:
    return read_records(demo.path("data", f"prompts_{split}.jsonl"), "prompts")  # type: ignore[return-value]


def _sample(items: list, n: int, rng: random.Random) -> list:
    return rng.sample(items, n) if n < len(items) else list(items)


def _has_run(path: Path) -> bool:
    return (path / "config.yaml").exists()


def _precision(s: DemoSettings) -> str:
    from instructrl.training.runtime import resolve_mixed_precision

    return resolve_mixed_precision(s.mixed_precision, cpu=True)


def _load_policy(path: Path):
    from instructrl.models.loading import load_causal_lm, load_tokenizer

    return load_causal_lm(path, dropout=False).eval(), load_tokenizer(path)


def _generate(
    demo: Demo,
    model,
    tok,
    prompts: list[str],
    *,
    seed: int,
    desc: str,
    k: int | list[int] = 1,
    top_k: int = 0,
    max_new_tokens: int | None = None,
    template: str = TEMPLATE,
) -> list[list[str]]:
    """Samples with a progress bar (`desc`: what is being sampled)."""
    from instructrl.evaluation.models import autocast
    from instructrl.models.generation import sample_responses
    from instructrl.training.runtime import progress_bar

    total = k * len(prompts) if isinstance(k, int) else sum(k)
    with autocast(_precision(demo.settings)), progress_bar(total, desc, unit="sample") as bar:
        return sample_responses(
            model,
            tok,
            prompts,
            k=k,
            seed=seed,
            top_k=top_k,
            batch_size=256,  # the same samples as any batch size (seeded per sample), 10-20% faster than 128
            max_new_tokens=max_new_tokens or demo.settings.max_new_tokens,
            prompt_template=template,
            progress=lambda done, _: bar.update(done - bar.n),
        )


def hash_seed(seed: int, name: str) -> int:
    from instructrl.models.generation import mix_seed

    return mix_seed(seed, *name.encode())
