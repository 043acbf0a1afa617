"""`instructrl demo`: the whole InstructGPT story in a small simulated world, on a CPU.

  0. the world: users write prompts; the intake dedups them, drops personal information, keeps at most 200
     per user and splits train/validation/test by user; a pretraining corpus; a word-level tokenizer
  1. pretrain a small GPT from scratch on the corpus (the story's "GPT-3")
  2. training labelers write demonstrations -> SFT
  3-4a. round 1: the SFT model and the few-shot base model sample K = 4..9 responses per prompt, training
     labelers rank them -> reward model -> PPO against it
  4b. PPO-ptx against the same reward model (PPO + pretraining gradients)
  4'. rounds 2..R (ChatGPT's loop): training labelers rank the current PPO policy's samples (mixed with the
     previous policy's), the reward model continues training on every round's rankings, PPO continues from
     the current policy with the KL still measured to SFT
  5. evaluation on held-out users' prompts, judged by held-out labelers only
  6. the report

The demo is a client of the library's pipeline (instructrl.pipeline.run): SFT and every round are its steps,
run by its runner, with the simulated training labelers as its `LabelSource` (labels.py); the demo adds the
world and the base model before them, PPO-ptx beside round 1, and its evaluation after. Its directory is a
pipeline's (OUT/sft, OUT/round1/{rm,ppo}, ..., OUT/steps.json) with OUT/world, OUT/pretrain, OUT/ppo_ptx,
OUT/evaluate and OUT/data beside; `--resume` skips finished steps (and a trainer interrupted mid-way
continues from its checkpoint). The held-out labelers and the world's gold standard reach step 5 only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instructrl.datasets.io import atomic_write_text, write_jsonl
from instructrl.datasets.records import PromptRecord
from instructrl.demo import base
from instructrl.demo.context import (
    Demo,
    generate,
    has_run,
    hash_seed,
    load_policy,
    policy_dir,
    precision,
    read_rows,
    rm_dir,
    sample,
    split_prompts,
)
from instructrl.demo.labelers import OUTCOME, Labeler, make_labelers
from instructrl.demo.labels import JUDGE_BASELINE, RankingRecord, SimulatedLabels, labelers_judge
from instructrl.demo.probes import ProbeSet
from instructrl.demo.settings import (
    DemoSettings,
    ppo_config,
    pretrain_config,
    rm_config,
    sft_config,
)
from instructrl.demo.summary import DemoSummary
from instructrl.demo.world import World, benchmark_correct, few_shot_answer
from instructrl.evaluation.stats import mean_ci, ranking_agreement, win_rate
from instructrl.pipeline.config import PipelineConfig
from instructrl.pipeline.round import RoundSummary
from instructrl.pipeline.run import Step, StepFailed, StepRecord, pipeline_steps, run_steps, step_record
from instructrl.ppo.summary import PPOSummary
from instructrl.reward.summary import RMSummary

if TYPE_CHECKING:
    from instructrl.ppo.setup import RewardFn

__all__ = ["Demo", "DemoSettings", "StepFailed", "hash_seed", "run_demo"]

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
    texts = [r["text"] for r in read_rows(demo.path("data", "pretrain.jsonl"))]
    val = [r["text"] for r in read_rows(demo.path("data", "pretrain_heldout.jsonl"))]
    return run_pretrain(
        model_dir=demo.path("world", "init"),
        texts=texts,
        val_texts=val,
        out=demo.path("pretrain"),
        config=config,
        block_size=s.block_size,
        resume=has_run(demo.path("pretrain")),
    )


def step_ppo_ptx(demo: Demo, reward_fn: RewardFn | None = None) -> dict[str, Any]:
    """4b. PPO-ptx from the SFT model against round 1's RM, beside the library's round 1 (its PPO): the
    paper's second policy, PPO with pretraining gradients mixed in (`reward_fn`: a reward function instead of
    the RM, for benchmarks/demo_oracle.py; the demo itself never passes one)."""
    from instructrl.ppo.train import run_ppo

    out = demo.path("ppo_ptx")
    return run_ppo(
        judge_fn=labelers_judge(demo, out / JUDGE_BASELINE),
        policy_dir=demo.path("sft", "final"),
        reward_dir=rm_dir(demo, 1),
        prompts=demo.path("data", "prompts_train.jsonl"),
        val_prompts=demo.path("data", "prompts_validation.jsonl"),
        pretrain_data=demo.path("data", "pretrain.jsonl"),
        out=out,
        config=ppo_config(demo.settings, ptx=True),
        resume=has_run(out),
        reward_fn=reward_fn,
    )


# ---------------------------------------------------------------------------------------------------------
# step 5: the evaluation, one function per measurement
# ---------------------------------------------------------------------------------------------------------
def step_evaluate(demo: Demo) -> dict[str, Any]:
    """Each model answers held-out users' prompts; held-out labelers compare every answer with the SFT
    model's and give Likert scores. Also: the alignment tax on pretraining text and the closed-QA benchmark,
    and reward over-optimisation measured with the gold standard on PPO's rollouts."""
    s = demo.settings
    prompts = [
        p.prompt for p in sample(split_prompts(demo, "test"), s.n_eval_prompts, demo.rng("evaluation"))
    ]
    dirs = _evaluated_dirs(demo)
    policies = {name: load_policy(d) for name, d in dirs.items()}  # each model loaded once
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
        "ppo": policy_dir(demo, 1),
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
                r[0] for r in generate(demo, model, tok, prompts, seed=seed, desc="answers: sft_again")
            ]
        else:  # the same seeds as SFT's candidate 0 (equal samples in fp32; bf16 is not batch-invariant)
            seed = hash_seed(s.seed, "eval")
            answers[name] = [
                r[0] for r in generate(demo, model, tok, prompts, seed=seed, desc=f"answers: {name}")
            ]
        if name == "base":
            few = generate(
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
    held = [r["text"] for r in read_rows(demo.path("data", "pretrain_heldout.jsonl"))]
    return {
        name: lm_loss(d, held, block_size=s.block_size, mixed_precision=precision(s))
        for name, d in dirs.items()
    }


def _benchmark_accuracy(demo: Demo, policies: dict[str, tuple[Any, Any]]) -> dict[str, float]:
    """Each model's accuracy on the world's closed-QA benchmark, answered greedily in a few words."""
    benchmark = demo.world.benchmark(seed=demo.settings.seed)
    out = {}
    for name, (model, tok) in policies.items():
        greedy = generate(
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
    out = {"ppo": _overoptimization(demo, demo.path("round1", "ppo"))}
    out["ppo_ptx"] = _overoptimization(demo, demo.path("ppo_ptx"))
    for r in range(2, demo.settings.rounds + 1):
        out[f"ppo_round{r}"] = _overoptimization(demo, demo.path(f"round{r}", "ppo"))
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
def demo_pipeline(demo: Demo) -> PipelineConfig:
    """The library pipeline's config for the demo's SFT and rounds: the stages' configs from the settings, the
    base model the demo pretrained, its corpus for PPO's pretraining loss."""
    s = demo.settings
    return PipelineConfig(
        out=demo.out,
        base_model=str(demo.path("pretrain", "final")),
        pretrain=demo.path("data", "pretrain.jsonl"),
        sft=sft_config(s),
        rm=rm_config(s, epochs=s.rm_epochs),
        later_rm_epochs=s.round_rm_epochs,
        ppo=ppo_config(s, ptx=False),
    )


def demo_steps(demo: Demo, reward_fn: RewardFn | None = None) -> list[Step]:
    """The demo's plan: its world and pretraining, then the library pipeline's SFT and rounds on the
    simulated labelers (round 1 beside PPO-ptx), then its evaluation. `reward_fn`: PPO's reward instead of
    the RM (benchmarks/demo_oracle.py)."""
    method = {
        step.name: step
        for step in pipeline_steps(demo_pipeline(demo), SimulatedLabels(demo), reward_fn=reward_fn)
    }

    def own(name: str, title: str, fn: Callable[[Demo], dict[str, Any]]) -> Step:
        return Step(name, title, lambda: step_record(name, {}, fn(demo)))

    plan = [
        own("world", "0. the world: prompts from users, intake, corpus, tokenizer", step_world),
        own("pretrain", "1. pretraining the base model on the corpus", step_pretrain),
        method["sft"]._replace(title="2. demonstrations and supervised fine-tuning"),
        method["round1"]._replace(
            title="3-4a. round 1: rankings of SFT and few-shot samples, the reward model, PPO"
        ),
        own("ppo_ptx", "4b. PPO-ptx (PPO + pretraining gradients)", lambda d: step_ppo_ptx(d, reward_fn)),
    ]
    plan += [
        method[f"round{r}"]._replace(
            title=f"4'. round {r}: rankings of the PPO policy's samples, the RM retrained, PPO continued"
        )
        for r in range(2, demo.settings.rounds + 1)
    ]
    plan.append(own("evaluate", "5. evaluation by held-out labelers", step_evaluate))
    return plan


def run_demo(
    out: str | Path,
    settings: DemoSettings,
    resume: bool = False,
    log: Callable[[str], None] = print,
    resume_command: str | None = None,
    reward_fn: RewardFn | None = None,
) -> DemoSummary:
    """Run the demo's steps into `out`, skipping those done earlier when `resume`. A step that fails says
    which it was and how to go on (`resume_command`: the command line that continues this run). `reward_fn`:
    PPO's reward instead of the RM, for benchmarks/demo_oracle.py; the demo itself never passes one."""
    from instructrl.errors import UserError

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not resume:
        raise UserError(
            f"{out}: already holds a demo run; pass --resume to continue it, or choose a new --out"
        )
    if (out / "world" / "done.json").exists():
        raise UserError(
            f"{out}: was made by an earlier instructrl (its steps marked by STEP/done.json, not steps.json) "
            f"and cannot be continued by this one; choose a new --out"
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
    steps = run_steps(
        out,
        demo_steps(demo, reward_fn),
        log=log,
        resume_command=resume_command or f"instructrl demo --out {out} --resume",
    )
    summary = build_summary(steps.done, settings, out)
    file = summary.write(out)
    from instructrl.report.html import write_report

    write_report(
        summary.as_json(), out / "report.html", title="instructrl demo: InstructGPT in a small world"
    )
    log(f"wrote {file} and {out / 'report.html'}")
    return summary


def build_summary(done: dict[str, StepRecord], settings: DemoSettings, demo_dir: Path) -> DemoSummary:
    """summary.json from the steps' records and the stages' typed summaries."""
    ev = done["evaluate"].summary
    rm = RMSummary.read(demo_dir / "round1" / "rm")
    rankings = RankingRecord.read(demo_dir, 1)
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
            rm.val_accuracy >= 0.65,
            f"RM {rm.val_accuracy:.3f}; labelers agree with each other {rankings.labeler_agreement:.3f}; "
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
    rounds = _rounds(ev, settings, demo_dir)
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
    timings = _timings(done, demo_dir)
    return DemoSummary.model_validate({
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
        "rm_val_accuracy": rm.val_accuracy,
        "labeler_agreement": rankings.labeler_agreement,
        "heldout_labeler_agreement": ev["heldout_labeler_agreement"],
        "rm_analysis": rma,
        "rm_on_sft_samples": ev["rm_on_sft_samples"],
        "overoptimization": ev["overoptimization"],
        "truthfulness": ev["truthfulness"],
        "toxicity": ev["toxicity"],
        "ppo_curves": {k: v for k, v in ev["overoptimization"].items() if k in ("ppo", "ppo_ptx")},
        "rounds": rounds,
        "intake": done["world"].summary["intake"],
        "samples": ev["samples"],
        "timings_s": timings,
        "settings": settings.as_json(),
    })  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------
def _timings(done: dict[str, StepRecord], demo_dir: Path) -> dict[str, float]:
    """Seconds per step and in all; each round's step also split into its reward model and its PPO (their
    summaries' own times) and the rest — the rankings, mostly sampling the candidates."""
    out: dict[str, float] = {}
    for name, record in done.items():
        out[name] = record.seconds
        if name.startswith("round") and name[5:].isdigit():
            rm = RMSummary.read(demo_dir / name / "rm").time_s
            ppo = PPOSummary.read(demo_dir / name / "ppo").time_s
            out |= {
                f"{name}: reward model": rm,
                f"{name}: PPO": ppo,
                f"{name}: rankings and the rest": record.seconds - rm - ppo,
            }
    out["total"] = sum(record.seconds for record in done.values())
    return out


def _rounds(ev: dict[str, Any], settings: DemoSettings, demo_dir: Path) -> list[dict[str, Any]]:
    """Per round of the loop: the PPO policy's win rate against SFT and gold score, its KL to SFT, and (from
    round 2) the RM's accuracy on that round's validation rankings before and after it was retrained."""
    out = []
    for n in range(1, settings.rounds + 1):
        model = "ppo" if n == 1 else f"ppo_round{n}"
        ppo = PPOSummary.read(demo_dir / f"round{n}" / "ppo")
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


def _overoptimization(demo: Demo, run: Path) -> list[dict[str, float]]:
    """Per PPO iteration of the run in `run`: mean KL, mean RM score and mean gold score of that iteration's
    rollouts."""
    by_it: dict[int, list[dict[str, Any]]] = {}
    for row in read_rows(run / "rollouts.jsonl"):
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
    candidates = generate(
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
    rm = score_responses(rm_dir(demo, 1), prompts, candidates)
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
    scores = rm_scores(rm_dir(demo, 1), comparisons)
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
        [p.prompt for p in split_prompts(demo, "test")],
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
    out = {name: generate(demo, model, tok, probes.prompts, k=k, seed=seed, desc=f"probes: {name}")}
    if name == "base":
        few = generate(
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
