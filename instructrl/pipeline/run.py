"""`instructrl pipeline`: the whole method from one config, step by step, each step resumable.

    sft -> round1 -> ... -> roundR -> eval-answers -> eval-suite -> report

Round 1 is `run_round` from the SFT model, round N + 1 `run_round` from round N's directory, exactly as
`instructrl round --sft` / `--previous`; the stages are the library's (`run_sft`, `run_rm`, `run_ppo`), called
in this process. The pipeline's directory:

    OUT/pipeline.yaml            the config it runs with; a rerun must give the same one
    OUT/sft/                     `instructrl sft`'s run directory (final/: the SFT model)
    OUT/round1/ ... OUT/roundR/  `instructrl round`'s directories (rm/, ppo/, round.json)
    OUT/eval/answers.jsonl       A/B pairs of every round's policy against SFT (evaluation.answers)
    OUT/eval/suite/              `instructrl eval suite`'s results and report.html (evaluation.suite)
    OUT/report.md, report.json   what each step made, round by round
    OUT/steps.json               the done-markers: each finished step's record (`StepRecord`)
    OUT/steps.log                one line per step started, finished or skipped

Resuming is running the same command again: a step in steps.json is skipped; an interrupted one continues
from its stage's checkpoint (the stages' own --resume); the steps after it run as usual.

The runner (`run_steps`) and the plan (`pipeline_steps`) are apart, so that a client adds its own steps
around the method's: the demo puts its world and pretraining before SFT, and its PPO-ptx arm and its
evaluation after the rounds, with its simulated labelers as the `LabelSource`.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import yaml
from pydantic import BaseModel

from instructrl.datasets.io import atomic_write_text
from instructrl.errors import UserError
from instructrl.pipeline.config import PipelineConfig
from instructrl.pipeline.labels import LabelSource
from instructrl.pipeline.round import RoundSummary, resumable, run_round
from instructrl.sft.summary import SFTSummary

if TYPE_CHECKING:
    from instructrl.ppo.setup import RewardFn


class StepRecord(BaseModel):
    """One finished step, as OUT/steps.json keeps it: the step's done-marker."""

    name: str
    finished_at: str
    seconds: float
    outputs: dict[str, str]
    """What the step made, by name: the paths later steps and the report read."""
    summary: dict[str, Any] = {}
    """The stage's summary.json (SFT), the round's round.json, or the evaluation's printed numbers."""


class PipelineReport(BaseModel):
    """OUT/report.json: the pipeline's outcome, round by round."""

    base_model: str
    sft: str
    sft_val_loss: float | None
    rounds: list[RoundSummary]
    answers: str | None = None
    suite_report: str | None = None
    steps: dict[str, float]
    """Seconds each step took (when it ran; a resumed step counts its last run only)."""


class StepFailed(RuntimeError):
    """A step raised an unexpected error (the cause, a defect of instructrl); the message says how to go on."""


class Step(NamedTuple):
    """One resumable step of a plan: its name in steps.json, what it does in words, and the call doing it."""

    name: str
    title: str
    run: Callable[[], StepRecord]


class Steps:
    """OUT/steps.json and OUT/steps.log: which steps are done, and what happened when."""

    def __init__(self, out: Path, log: Callable[[str], None]):
        self.file, self.log_file, self.echo = out / "steps.json", out / "steps.log", log
        raw = json.loads(self.file.read_text(encoding="utf-8")) if self.file.is_file() else {}
        self.done = {name: StepRecord.model_validate(r) for name, r in raw.items()}

    def log(self, event: str, name: str, detail: str = "") -> None:
        line = f"{datetime.now(UTC).isoformat(timespec='seconds')} {event} {name}{detail}"
        with open(self.log_file, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        self.echo(f"pipeline: {event} {name}{detail}")

    def finish(self, record: StepRecord) -> None:
        self.done[record.name] = record
        doc = {name: r.model_dump(mode="json") for name, r in self.done.items()}
        atomic_write_text(self.file, json.dumps(doc, indent=2) + "\n")
        self.log("done", record.name, f" ({record.seconds:.1f} s)")


def start_dir(out: Path, config: PipelineConfig) -> None:
    """OUT/pipeline.yaml: written by the first run; a rerun resumes only with the same config."""
    file = out / "pipeline.yaml"
    now = config.model_dump(mode="json")
    if file.is_file():
        saved = yaml.safe_load(file.read_text(encoding="utf-8"))
        differ = _differences(saved, now)
        if differ:
            raise UserError(
                f"{out}: was started with another config ({file}); these keys differ: {', '.join(differ)}. "
                f"Rerun with the same config to resume, or set another 'out' to start anew"
            )
        return
    if out.exists() and any(out.iterdir()):
        raise UserError(
            f"{out}: holds something that is not a pipeline (no pipeline.yaml); choose another 'out'"
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(file, yaml.safe_dump(now, sort_keys=False))


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = list(a) + [k for k in b if k not in a]
        return [d for k in keys for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


# --- the steps ----------------------------------------------------------------------------------------------


def step_sft(config: PipelineConfig, labels: LabelSource) -> StepRecord:
    from instructrl.sft.train import run_sft

    run = config.out / "sft"
    if (run / "summary.json").is_file():  # finished, but killed before its marker was written
        summary = SFTSummary.read(run)
    else:
        demos = labels.demonstrations()
        summary = SFTSummary.model_validate(
            run_sft(
                model_dir=config.base_model,
                data=demos.train,
                val_data=demos.validation,
                out=run,
                config=config.sft.model_copy(),
                resume=resumable(run),
                changed_keys=config.changed.get("sft", set()),
            )
        )
    return step_record("sft", {"model": str(run / "final")}, summary.as_dict())


def step_round(
    config: PipelineConfig, labels: LabelSource, round_: int, reward_fn: RewardFn | None = None
) -> StepRecord:
    out = config.out / f"round{round_}"
    if (out / "round.json").is_file():
        record = RoundSummary.read(out)
    else:
        sft = config.out / "sft" / "final"
        previous = config.out / f"round{round_ - 1}" if round_ > 1 else None
        last = RoundSummary.read(previous) if previous is not None else None
        # the answers to rank: the last policy's, and the one's before it (round 1: SFT's alone)
        before = (RoundSummary.read(last.previous).policy if last.previous else last.sft) if last else None
        data = labels.round_labels(
            round_,
            policy=Path(last.policy) if last else sft,
            previous_policy=Path(before) if before else None,
        )
        prompts = labels.prompts()
        record = run_round(
            out=out,
            data=data.comparisons,
            val_data=data.validation,
            prompts=prompts.train,
            val_prompts=prompts.validation,
            config=config.round_config(round_),
            sft=sft if previous is None else None,
            previous=previous,
            norm_data=labels.demonstrations().train,  # the paper: demonstrations score 0 on average
            pretrain_data=config.pretrain,
            resume=out.exists(),
            judge_fn=labels.judge(round_, out),
            reward_fn=reward_fn,
        )
    outputs = {"policy": record.policy, "reward_model": record.reward_model, "round": str(out / "round.json")}
    return step_record(f"round{round_}", outputs, record.model_dump(mode="json"))


def step_answers(config: PipelineConfig, models: dict[str, str]) -> StepRecord:
    from instructrl.evaluation.answers import AnswersEval, write_answers

    assert config.evaluation.answers is not None
    cfg = config.evaluation.answers
    answers = AnswersEval(
        models=models, prompts=[cfg.prompts], out=config.out / "eval" / "answers.jsonl", baseline="sft",
        max_new_tokens=cfg.max_new_tokens, seed=cfg.seed,
    )  # fmt: skip
    pairs = write_answers(answers)["written"]
    command = [
        "instructrl",
        "eval",
        "answers",
        *(a for n, p in models.items() for a in ("--model", f"{n}={p}")),
    ]
    command += [
        "--prompts",
        str(cfg.prompts),
        "--baseline",
        "sft",
        "--max-new-tokens",
        str(cfg.max_new_tokens),
    ]
    command += ["--seed", str(cfg.seed), "--out", str(answers.out)]
    return step_record(
        "eval-answers", {"answers": str(answers.out)}, {"pairs": pairs, "command": shlex.join(command)}
    )


def step_suite(config: PipelineConfig, models: dict[str, str]) -> StepRecord:
    from instructrl.evaluation.benchmarks.runs import command_line
    from instructrl.evaluation.benchmarks.suite import SuiteConfig, run_suite

    assert config.evaluation.suite is not None
    cfg = config.evaluation.suite
    out = config.out / "eval" / "suite"
    suite = SuiteConfig(
        models=models, out=out, baseline="base", truthfulqa=cfg.truthfulqa, toxicity=tuple(cfg.toxicity),
        bias=tuple(cfg.bias), tax=tuple(cfg.tax), toxicity_protocol=cfg.toxicity_protocol,
        samples=cfg.samples, limit=cfg.limit,
    )  # fmt: skip
    result = run_suite(suite)
    return step_record(
        "eval-suite", {"report": str(result.report)}, {"command": command_line("suite", suite)}
    )


def step_report(config: PipelineConfig, rounds: int) -> StepRecord:
    done = Steps(config.out, lambda _: None).done  # the records of the steps before this one
    report = PipelineReport(
        base_model=config.base_model,
        sft=done["sft"].outputs["model"],
        sft_val_loss=SFTSummary.read(config.out / "sft").val_loss,
        rounds=[RoundSummary.read(config.out / f"round{n}") for n in range(1, rounds + 1)],
        answers=done["eval-answers"].outputs["answers"] if "eval-answers" in done else None,
        suite_report=done["eval-suite"].outputs["report"] if "eval-suite" in done else None,
        steps={name: r.seconds for name, r in done.items()},
    )
    atomic_write_text(config.out / "report.json", report.model_dump_json(indent=2) + "\n")
    atomic_write_text(config.out / "report.md", render_report(report))
    return step_record("report", {"report": str(config.out / "report.md")}, {})


def render_report(report: PipelineReport) -> str:
    """report.md: the rounds as one table, then where everything is."""

    def num(x: Any) -> str:
        return "–" if x is None else f"{x:.3f}"

    lines = [
        "# instructrl pipeline",
        "",
        f"Base model `{report.base_model}`; SFT `{report.sft}` (validation loss {num(report.sft_val_loss)}).",
        "",
        "| round | RM accuracy before → after | PPO reward initial → final | KL to SFT initial → final | policy |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in report.rounds:
        p = r.ppo
        lines.append(
            f"| {r.round} | {num(r.rm_accuracy_before)} → {num(r.rm_accuracy_after)} "
            f"| {num(p.get('initial_score_mean'))} → {num(p.get('final_score_mean'))} "
            f"| {num(p.get('initial_kl_mean'))} → {num(p.get('final_kl_mean'))} | `{r.policy}` |"
        )
    lines.append("")
    if report.answers:
        lines.append(f"A/B pairs against SFT, for the labeling app: `{report.answers}`")
    if report.suite_report:
        lines.append(f"Public benchmarks: `{report.suite_report}`")
    lines.append("Seconds per step: " + ", ".join(f"{k} {v:.1f}" for k, v in report.steps.items()))
    return "\n".join(lines) + "\n"


def step_record(name: str, outputs: dict[str, str], summary: dict[str, Any]) -> StepRecord:
    return StepRecord(
        name=name, finished_at=datetime.now(UTC).isoformat(timespec="seconds"), seconds=0.0,
        outputs=outputs, summary=summary,
    )  # fmt: skip


# --- the runner ---------------------------------------------------------------------------------------------


def pipeline_steps(
    config: PipelineConfig, labels: LabelSource, *, reward_fn: RewardFn | None = None
) -> list[Step]:
    """The method's steps on `labels`, in order: SFT, the rounds, the evaluations asked for, the report.
    `reward_fn`: PPO's reward instead of each round's RM (run_ppo's; for a programmatic reward)."""
    out, rounds = config.out, labels.rounds
    policies = {f"round{n}": str(out / f"round{n}" / "ppo" / "final") for n in range(1, rounds + 1)}
    plan = [Step("sft", "SFT on the demonstrations", partial(step_sft, config, labels))]
    plan += [
        Step(
            f"round{n}",
            f"round {n}: its rankings, the reward model retrained, PPO "
            + ("from SFT" if n == 1 else f"continued from round {n - 1}'s policy"),
            partial(step_round, config, labels, n, reward_fn),
        )
        for n in range(1, rounds + 1)
    ]
    if config.evaluation.answers is not None:
        answering = {"sft": str(out / "sft" / "final"), **policies}
        plan.append(Step("eval-answers", "A/B pairs against SFT", partial(step_answers, config, answering)))
    if config.evaluation.suite is not None:
        benchmarked = {
            "base": config.base_model,
            "sft": str(out / "sft" / "final"),
            "policy": policies[f"round{rounds}"],
        }
        plan.append(Step("eval-suite", "the public benchmarks", partial(step_suite, config, benchmarked)))
    plan.append(Step("report", "the report", partial(step_report, config, rounds)))
    return plan


def run_steps(
    out: Path, plan: list[Step], *, log: Callable[[str], None] = print, resume_command: str
) -> Steps:
    """Every step of `plan` not in OUT/steps.json yet, in order, each recorded there once it is done. A step
    that fails says which it was and how to go on (`resume_command`); the steps before it are kept."""
    steps = Steps(out, log)
    for i, step in enumerate(plan, start=1):
        if step.name in steps.done:
            steps.log("skip", step.name, f" (done {steps.done[step.name].finished_at})")
            continue
        steps.log("start", step.name, f" ({i} of {len(plan)}: {step.title})")
        t0 = time.perf_counter()
        try:
            record = step.run()
        except BaseException as e:
            kept = [s.name for s in plan if s.name in steps.done]
            how = (
                f"stopped in step '{step.name}' ({step.title}) after {time.perf_counter() - t0:.0f} s; "
                f"the steps done ({', '.join(kept) or 'none'}) are kept in {out}. "
                f"Go on from this step with: {resume_command}"
            )
            from instructrl.training.runtime import Stopped

            if isinstance(e, UserError):
                raise UserError(f"{e}\n{how}") from None
            if isinstance(e, Exception) and not isinstance(
                e, Stopped
            ):  # a defect: its traceback, then how to go on
                raise StepFailed(how) from e
            steps.log("stopped", step.name, f" ({type(e).__name__})")
            log(how)  # stopped (Ctrl-C, SIGTERM: the stage saved a checkpoint) or interrupted
            raise
        steps.finish(record.model_copy(update={"seconds": time.perf_counter() - t0}))
    return steps


def run_pipeline(
    config: PipelineConfig,
    *,
    log: Callable[[str], None] = print,
    resume_command: str = "the same `instructrl pipeline` command",
) -> PipelineReport:
    """Every step not done yet, in order; returns the report (OUT/report.json)."""
    from instructrl.models.loading import resolve_model

    if config.data is None:
        raise UserError("the pipeline config has no 'data' section: say where the labels come from")
    labels: LabelSource = config.data.open()
    resolve_model(config.base_model, "base model")  # a missing folder or uncached Hub id fails here
    labels.check()  # bad data fails here, before any training
    for file in (config.evaluation.answers.prompts,) if config.evaluation.answers else ():
        if not Path(file).is_file():
            raise UserError(f"{file}: no such prompts file (evaluation.answers.prompts)")
    start_dir(config.out, config)
    run_steps(config.out, pipeline_steps(config, labels), log=log, resume_command=resume_command)
    return PipelineReport.model_validate_json((config.out / "report.json").read_text(encoding="utf-8"))
