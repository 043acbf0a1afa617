"""Issue 22's levers, measured on a finished full demo run: how well a reward model orders SFT's own samples as
the gold standard does (by kind of error), what best-of-N by it wins, and what PPO against it wins.

    python benchmarks/rm_levers.py RUN OUT [--rankings-per-prompt 3] [--rm-init DIR] [--alpha 0 0.1 0.25]
                                           [--ppo] [--ppo-set ref_temperature=0.7 ...]

RUN is a finished `instructrl demo` run (full settings). OUT gets RUN's world, data, base and SFT model
(linked), then, with `--rankings-per-prompt N`, the demo's comparisons ranked N times per training prompt on
fresh samples (`DemoSettings.rankings_per_prompt`) and a reward model trained on them with the demo's recipe
(`--rm-init DIR`: from another SFT model, e.g. a larger one; `--rm-set KEY=VALUE`: RMConfig overrides).
Measured, for RUN's round-1 and round-2 RMs and OUT's: on SFT's 16 samples per evaluation prompt (the
demo's best-of-N candidates, regenerated with its seeds) the share of gold-ordered pairs each RM orders as
the gold standard does (demo/rm_gold.py), for RM + alpha * log pi_SFT(y|x) per --alpha; the held-out
labelers' win rate of best-of-4 and best-of-16 against SFT's answer (candidate 0), and their gold score.
`--ppo`: PPO from SFT against OUT's RM (the demo's round-1 RM when OUT trains none) with the demo's settings
(`--ppo-set`: DemoSettings overrides, e.g. ref_temperature=0.7 or ppo_keep_by=labelers; `--value-from-demo-rm`:
the value model from the demo's smaller round-1 RM), its answers judged as the demo judges them. One JSON line per measurement is appended
to results/rm_levers.jsonl. A diagnostic: the gold standard never reaches training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "rm_levers.jsonl"


def record(row: dict[str, Any]) -> None:
    """Print the row; append it to RESULTS unless a row of another commit holds the same measurement with the
    same numbers (a later run measures the demo's own RMs again: a repeat, not a new result)."""
    print(json.dumps(row))
    same = {k: v for k, v in row.items() if k != "commit"}
    earlier = [json.loads(line) for line in RESULTS.read_text().splitlines()] if RESULTS.exists() else []
    if any({k: v for k, v in e.items() if k != "commit"} == same for e in earlier):
        print("  (recorded earlier with the same numbers: not appended)")
        return
    with RESULTS.open("a") as f:
        f.write(json.dumps(row) + "\n")


def cpu_kind() -> str:
    """AMX, AVX512-BF16 or what torch reports (e.g. AVX2): the kinds the README's times name."""
    import torch

    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    if "amx_bf16" in flags:
        return "AMX"
    return "AVX512-BF16" if "avx512_bf16" in flags else torch.backends.cpu.get_cpu_capability()


def loglikelihoods(
    model, tok, template: str, prompts: list[str], responses: list[list[str]]
) -> list[list[float]]:
    """log pi(y | x) of each response, summed over its tokens, in batched fp32 forward passes
    (`request_loglikelihoods`, the evaluations' own); an empty response's is 0."""
    from instructrl.datasets.tokenize import prompt_ids, response_ids
    from instructrl.evaluation.benchmarks.common import max_length, request_loglikelihoods

    requests, where = [], []
    for i, (p, rs) in enumerate(zip(prompts, responses, strict=True)):
        q = prompt_ids(tok, p, template)
        for j, r in enumerate(rs):
            if ids := response_ids(tok, r, p):
                requests.append((q, ids))
                where.append((i, j))
    scores = request_loglikelihoods(model, requests, tok.pad_token_id, max_length(model, tok), batch_size=64)
    out = [[0.0] * len(rs) for rs in responses]
    for (i, j), lp in zip(where, scores, strict=True):
        out[i][j] = lp
    return out


def sft_samples(demo, run: Path, out: Path):
    """The evaluation's prompts, SFT's 16 candidates per prompt (as step_evaluate draws them), their log pi_SFT
    and their gold-ordered pairs (demo/rm_gold.py)."""
    from instructrl.demo import pipeline as P
    from instructrl.demo.rm_gold import gold_pairs
    from instructrl.models.checkpoint import CheckpointMeta

    cache = out / "sft16.json"
    if not cache.exists():
        s = demo.settings
        prompts = [
            p.prompt
            for p in P.sample(P.split_prompts(demo, "test"), s.n_eval_prompts, demo.rng("evaluation"))
        ]
        model, tok = P.load_policy(run / "sft" / "final")
        _, candidates = P.sft_answers_and_candidates(demo, model, tok, prompts)
        template = CheckpointMeta.read(run / "sft" / "final").prompt_template
        logp = loglikelihoods(model, tok, template, prompts, candidates)
        cache.write_text(json.dumps({"prompts": prompts, "candidates": candidates, "logp": logp}))
    d = json.loads(cache.read_text())
    return d["prompts"], d["candidates"], d["logp"], gold_pairs(demo.world, d["prompts"], d["candidates"])


def measure_rm(demo, name: str, rm: Path, samples, alphas: list[float], base: dict[str, Any]) -> None:
    from instructrl.demo import pipeline as P
    from instructrl.demo.rm_gold import pair_accuracy
    from instructrl.evaluation.models import score_responses

    prompts, candidates, logp, pairs = samples
    raw = score_responses(rm, prompts, candidates)
    for alpha in alphas:
        scores = [
            [x + alpha * lp for x, lp in zip(a, b, strict=True)] for a, b in zip(raw, logp, strict=True)
        ]
        answers = {"sft": [c[0] for c in candidates]}
        for n in (4, 16):
            answers[f"best_of_{n}"] = [
                cs[max(range(n), key=lambda j: sc[j])] for cs, sc in zip(candidates, scores, strict=True)
            ]
        win = P._win_rates(demo.heldout_labelers, prompts, answers, ("best_of_4", "best_of_16"))
        acc = pair_accuracy(pairs, scores)
        record(
            {
                **base,
                "what": "rm",
                "rm": name,
                "alpha": alpha,
                "pairs": acc["all"]["pairs"],
                "accuracy": acc["all"]["accuracy"],
                **{k: v["accuracy"] for k, v in acc["by_kind"].items()},
                "wide_gaps": acc["gap_at_least_0.6"]["accuracy"],
                **{
                    m: {
                        "win": win[m]["mean"],
                        "ci_low": win[m]["ci_low"],
                        "gold": sum(map(demo.world.gold_score, prompts, answers[m])) / len(prompts),
                    }
                    for m in ("best_of_4", "best_of_16")
                },
            }
        )


def train_rm(args, demo, settings, samples, base: dict[str, Any]) -> Path:
    """The demo's rankings N times per prompt, an RM on them (from --rm-init), measured; its directory."""
    import yaml

    import instructrl.reward.train as rm_train
    from instructrl.demo.labels import SimulatedLabels
    from instructrl.demo.settings import rm_config
    from instructrl.reward.config import RMConfig

    # the demo's round-1 rankings (N passes with rankings_per_prompt), by its labelers as the pipeline asks them
    SimulatedLabels(demo).round_labels(1, policy=args.out / "sft" / "final", previous_policy=None)
    given = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.rm_set)}
    config = RMConfig.model_validate({**rm_config(settings, epochs=settings.rm_epochs).model_dump(), **given})
    done = args.out / "rm" / "summary.json"
    summary = (
        json.loads(done.read_text())
        if done.exists()
        else rm_train.run_rm(
            model_dir=args.rm_init or args.out / "sft" / "final",
            data=args.out / "data" / "comparisons_train.jsonl",
            val_data=args.out / "data" / "comparisons_validation.jsonl",
            norm_data=args.out / "data" / "demonstrations_train.jsonl",
            out=args.out / "rm",
            config=config,
            resume=(args.out / "rm" / "config.yaml").exists(),
        )
    )
    base["rm_set"] = args.rm_set
    base["rm_time_s"] = summary["time_s"]
    measure_rm(demo, "this run's", args.out / "rm" / "final", samples, args.alpha, base)
    return args.out / "rm" / "final"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--rankings-per-prompt", type=int, default=None)
    p.add_argument("--rm-init", type=Path, default=None, help="SFT model to start OUT's RM from")
    p.add_argument("--rm-set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--alpha", type=float, nargs="+", default=[0.0])
    p.add_argument("--ppo", action="store_true")
    p.add_argument("--ptx", action="store_true", help="with --ppo: PPO-ptx (the demo's ptx_coef)")
    p.add_argument("--ppo-set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--value-from-demo-rm",
        action="store_true",
        help="with --ppo: the value model from the demo's round-1 RM (PPO's --value-model), not from PPO's RM",
    )
    args = p.parse_args()

    from instructrl.demo import pipeline as P
    from instructrl.demo.labelers import make_labelers
    from instructrl.demo.settings import DemoSettings, ppo_config
    from instructrl.demo.world import World
    from instructrl.ppo.train import run_ppo

    saved = json.loads((args.run / "settings.json").read_text())
    settings = DemoSettings.full(saved["seed"])
    if {k: v for k, v in settings.as_json().items() if k in saved} != saved:
        raise SystemExit(f"{args.run}: not a full demo run with default settings")
    if not (args.run / "summary.json").exists():  # its data and models would be copied half-made
        raise SystemExit(
            f"{args.run}: the demo has not finished (no summary.json); wait for it or --resume it"
        )
    if args.rankings_per_prompt:
        settings = dataclasses.replace(settings, rankings_per_prompt=args.rankings_per_prompt)
    world = World(settings.seed)
    labelers = make_labelers(
        world, settings.n_train_labelers, settings.n_heldout_labelers, seed=settings.seed
    )
    args.out.mkdir(parents=True, exist_ok=True)
    for step in ("world", "pretrain", "sft"):
        if not (args.out / step).exists():
            (args.out / step).symlink_to((args.run / step).resolve())
    if not (args.out / "data").exists():
        shutil.copytree(args.run / "data", args.out / "data")
        if settings.rankings_per_prompt != saved.get("rankings_per_prompt", 1):
            # round 1 is ranked again with this run's passes, not taken from the demo's record of it
            from instructrl.demo.labels import comparisons_file, record_file

            record_file(args.out, 1).unlink()
            for split in ("train", "validation"):
                (args.out / "data" / comparisons_file(1, split)).unlink()
    demo = P.Demo(
        out=args.out,
        settings=settings,
        world=world,
        train_labelers=[x for x in labelers if x.group == "train"],
        heldout_labelers=[x for x in labelers if x.group == "heldout"],
    )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    base = {
        "run": str(args.run),
        "seed": settings.seed,
        "rankings_per_prompt": settings.rankings_per_prompt,
        "rm_init": str(args.rm_init or "sft"),
        "cpu": cpu_kind(),
        "commit": commit.strip(),
    }
    samples = sft_samples(demo, args.run, args.out)
    demos = {**base, "rankings_per_prompt": 1, "rm_init": "sft"}  # the demo's own RMs
    measure_rm(demo, "round1 (the demo's)", args.run / "round1" / "rm" / "final", samples, args.alpha, demos)
    if (args.run / "round2" / "rm" / "final").exists():
        measure_rm(
            demo, "round2 (the demo's)", args.run / "round2" / "rm" / "final", samples, args.alpha, demos
        )
    reward_dir = args.run / "round1" / "rm" / "final"  # PPO's: the demo's round-1 RM, or this run's
    if args.rankings_per_prompt or args.rm_init:
        reward_dir = train_rm(args, demo, settings, samples, base)
    if not args.ppo:
        return
    overrides = dict(kv.split("=", 1) for kv in args.ppo_set)
    ppo_settings = dataclasses.replace(
        settings,
        **{k: None if v == "none" else type(getattr(settings, k) or 0.0)(v) for k, v in overrides.items()},
    )
    name = "ppo_" + "_".join(f"{k}{v}" for k, v in overrides.items()) if overrides else "ppo"
    name = name.replace("ppo", "ppo_ptx", 1) if args.ptx else name
    value_dir = None
    if args.value_from_demo_rm:  # the value model from the demo's (smaller) round-1 RM, not PPO's RM
        value_dir, name = args.run / "round1" / "rm" / "final", name + "_value_demo_rm"
    run_ppo(
        policy_dir=args.out / "sft" / "final",
        reward_dir=reward_dir,
        prompts=args.out / "data" / "prompts_train.jsonl",
        val_prompts=args.out / "data" / "prompts_validation.jsonl",
        pretrain_data=args.out / "data" / "pretrain.jsonl",
        out=args.out / name,
        config=ppo_config(ppo_settings, ptx=args.ptx),
        resume=(args.out / name / "config.yaml").exists(),
        value_dir=value_dir,
        judge_fn=P.labelers_judge(
            dataclasses.replace(demo, settings=ppo_settings), args.out / name / "judge.json"
        ),
    )
    base["rm"] = "the demo's round 1" if reward_dir == args.run / "round1" / "rm" / "final" else "this run's"
    prompts, candidates, *_ = samples
    model, tok = P.load_policy(args.out / name / "final")
    seed = P.hash_seed(settings.seed, "eval")
    answers = {"sft": [c[0] for c in candidates]}
    answers["ppo"] = [r[0] for r in P.generate(demo, model, tok, prompts, seed=seed, desc=f"answers: {name}")]
    win = P._win_rates(demo.heldout_labelers, prompts, answers, ("ppo",))["ppo"]
    gold = {m: sum(map(world.gold_score, prompts, a)) / len(prompts) for m, a in answers.items()}
    if value_dir is not None:
        base["value_model"] = "the demo's round 1 RM"
    base["ppo_time_s"] = json.loads((args.out / name / "summary.json").read_text())["time_s"]
    record({**base, "what": "ppo_ptx" if args.ptx else "ppo", "ppo_set": args.ppo_set, "win": win["mean"], "ci_low": win["ci_low"], **{
        f"gold_{m}": g for m, g in gold.items()}})  # fmt: skip


if __name__ == "__main__":
    main()
