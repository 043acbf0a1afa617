"""The attempts at an RL step that beats SFT, run on a finished demo run's models and judged the demo's way.

    python benchmarks/demo_rl_attempts.py ppo RUN --seed 0 --out DIR [--gold | --rm RM_DIR] [--set KEY=VALUE ...]
    python benchmarks/demo_rl_attempts.py rm RUN --seed 0 --out DIR [--sources mix|sft|policy] [--policy DIR]
        [--data-from DIR] [--add-data DIR] [--prompts N] [--k 4 9] [--set KEY=VALUE ...]

RUN is an `instructrl demo` output directory (its pretrain/, sft/, rm/ and data/ are read, never written).

- `ppo`: PPO from RUN's SFT model with the demo's PPO settings plus --set overrides, rewarded by an RM (RUN's
  own, or --rm) or, as a diagnostic, by the world's gold standard (--gold: 5 logits per unit of gold); then
  the demo's evaluation of it: one answer per test prompt with the evaluation's seeds, win rate against SFT's
  answer by the held-out labelers, mean gold score.
- `rm`: ranked comparisons collected as the demo collects them, from candidate sources of choice (`mix`: SFT
  and few-shot base, the demo's; `sft`: SFT only; `policy`: SFT and --policy, e.g. an earlier PPO model, as
  InstructGPT's comparisons came from several policies), optionally added to an earlier round's (--add-data);
  an RM trained on them from RUN's SFT model; then the RM held against the gold standard on SFT's own
  samples of the test prompts: pairwise accuracy on the pairs the gold standard orders, and best-of-N.

Every result is appended to benchmarks/results/rl_attempts.jsonl. Diagnostics only: the demo never trains
on the gold standard, and the held-out labelers only judge.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from instructrl.config import build_config, load_config, parse_override  # noqa: E402
from instructrl.datasets.io import read_comparisons, write_jsonl  # noqa: E402
from instructrl.datasets.records import Comparison  # noqa: E402
from instructrl.demo import pipeline  # noqa: E402
from instructrl.demo.knowledge import canon  # noqa: E402
from instructrl.demo.labelers import OUTCOME, make_labelers  # noqa: E402
from instructrl.demo.settings import ppo_config  # noqa: E402
from instructrl.demo.world import World, few_shot_answer  # noqa: E402
from instructrl.evaluation.models import generate_answers_k, score_responses  # noqa: E402
from instructrl.evaluation.stats import win_rate  # noqa: E402
from instructrl.models.loading import quiet_transformers  # noqa: E402

RESULTS = HERE / "results" / "rl_attempts.jsonl"


class Run:
    """A finished demo run read back: its world, its labelers and the evaluation's test prompts."""

    def __init__(self, out: str | Path, seed: int):
        self.settings = pipeline.DemoSettings.full(seed)
        self.world = World(seed)
        labelers = make_labelers(
            self.world, self.settings.n_train_labelers, self.settings.n_heldout_labelers, seed=seed
        )
        self.demo = pipeline.Demo(
            out=Path(out),
            settings=self.settings,
            world=self.world,
            train_labelers=[lab for lab in labelers if lab.group == "train"],
            heldout_labelers=[lab for lab in labelers if lab.group == "heldout"],
        )
        test = pipeline.split_prompts(self.demo, "test")
        self.test_prompts = [
            p.prompt for p in pipeline.sample(test, self.settings.n_eval_prompts, self.demo.rng("evaluation"))
        ]

    def path(self, *parts: str) -> Path:
        return self.demo.path(*parts)

    def samples(self, model_dir, prompts, k, stream: str, template: str | None = None) -> list[list[str]]:
        """k samples per prompt; stream "eval" gives the evaluation's own seeds (sample 0 = its answer)."""
        seed = pipeline.hash_seed(self.settings.seed, stream)
        if template is None:
            return generate_answers_k(
                model_dir, prompts, k, seed=seed, max_new_tokens=self.settings.max_new_tokens
            )
        from instructrl.models.generation import sample_responses
        from instructrl.models.loading import load_causal_lm, load_tokenizer

        model = load_causal_lm(model_dir, dropout=False).eval()
        return sample_responses(
            model, load_tokenizer(model_dir), prompts, k=k, seed=seed, batch_size=128,
            max_new_tokens=self.settings.max_new_tokens, prompt_template=template,
        )  # fmt: skip

    def gold(self, prompts, texts) -> list[float]:
        return [self.world.gold_score(p, t) for p, t in zip(prompts, texts, strict=True)]

    def win(self, prompts, a, b) -> dict[str, float]:
        """a against b, judged by the held-out labelers as the demo's evaluation judges."""
        held = self.demo.heldout_labelers
        verdicts = [held[i % len(held)].compare(p, a[i], b[i]) for i, p in enumerate(prompts)]
        return win_rate([OUTCOME[v] for v in verdicts])


def attempt_ppo(args) -> dict:
    from instructrl.ppo.config import PPOConfig
    from instructrl.ppo.train import run_ppo

    run = Run(args.run, args.seed)
    # the demo's PPO config, then this attempt's --set keys
    sets = dict(parse_override(text) for text in ["keep=last", *args.set])
    demo_keys = ppo_config(run.settings, ptx=False).model_dump(exclude_unset=True)
    config = build_config(PPOConfig, {**demo_keys, **sets}, {k: f"--set {k}" for k in sets})
    reward_fn = None
    if args.gold:

        def reward_fn(prompts, responses):
            return [5.0 * run.world.gold_score(p, r) for p, r in zip(prompts, responses, strict=True)]

    summary = run_ppo(
        policy_dir=run.path("sft", "final"),
        reward_dir=args.rm or run.path("round1", "rm", "final"),
        prompts=run.path("data", "prompts_train.jsonl"),
        val_prompts=run.path("data", "prompts_validation.jsonl"),
        out=args.out,
        config=config,
        reward_fn=reward_fn,
        changed_keys=set(config.model_fields_set),
    )
    P = run.test_prompts
    sft = [s[0] for s in run.samples(run.path("sft", "final"), P, 1, "eval")]
    ppo = [s[0] for s in run.samples(Path(args.out) / "final", P, 1, "eval")]
    return {
        "reward": "gold" if args.gold else str(args.rm or "the run's RM"),
        "sets": args.set,
        "sft_gold": statistics.mean(run.gold(P, sft)),
        "ppo_gold": statistics.mean(run.gold(P, ppo)),
        "win_vs_sft": run.win(P, ppo, sft),
        "same_answer_as_sft": sum(a == b for a, b in zip(ppo, sft, strict=True)) / len(P),
        "final_kl": summary["final_kl_mean"],
        "evaluations": summary["evaluations"],
    }


def attempt_rm(args) -> dict:
    from instructrl.reward.config import RMConfig
    from instructrl.reward.train import run_rm

    run = Run(args.run, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sft_dir, base_dir = run.path("sft", "final"), run.path("pretrain", "final")
    files = {}
    for split, n in (("train", args.prompts), ("validation", max(60, args.prompts // 8))):
        files[split] = out / f"comparisons_{split}.jsonl"
        if args.data_from:
            shutil.copy(Path(args.data_from) / files[split].name, files[split])
            continue
        rng = random.Random(f"comparisons/{split}/{args.seed}")
        prompts = pipeline.sample(pipeline.split_prompts(run.demo, split), n, rng)
        texts = [p.prompt for p in prompts]
        ks = [rng.randint(*args.k) for _ in prompts]
        pools = [[] for _ in prompts]
        if args.sources in ("mix", "sft"):
            n_sft = [k + 3 if args.sources == "sft" else (k + 1) // 2 + 1 for k in ks]
            for pool, cands in zip(
                pools, run.samples(sft_dir, texts, n_sft, f"cmp-sft/{split}"), strict=True
            ):
                pool += cands
        if args.sources == "mix":
            few = [run.world.few_shot_prompt(t) for t in texts]
            cands = run.samples(base_dir, few, [k // 2 + 1 for k in ks], f"cmp-base/{split}", "{prompt}")
            for pool, c in zip(pools, cands, strict=True):
                pool += [few_shot_answer(r) for r in c]
        if args.sources == "policy":  # alternate: the other policy's sample, then SFT's
            a = run.samples(args.policy, texts, [k // 2 + 2 for k in ks], f"cmp-pol/{split}")
            b = run.samples(sft_dir, texts, [(k + 1) // 2 + 1 for k in ks], f"cmp-sft/{split}")
            for pool, x, y in zip(pools, a, b, strict=True):
                pool += [t for pair in itertools.zip_longest(x, y) for t in pair if t is not None]
        records = []
        for i, p in enumerate(prompts):
            seen: dict[str, str] = {}
            for t in pools[i]:
                seen.setdefault(canon(t), t)
            responses = list(seen.values())[: ks[i]]
            if len(responses) < args.k[0]:
                continue
            rng.shuffle(responses)
            labeler = run.demo.train_labelers[i % len(run.demo.train_labelers)]
            records.append(
                Comparison(
                    prompt=p.prompt,
                    responses=responses,
                    ranking=labeler.rank(p.prompt, responses),
                    user_id=p.user_id,
                    labeler_id=labeler.id,
                )
            )
        if args.add_data:  # an earlier round's comparisons
            records = [*read_comparisons(Path(args.add_data) / files[split].name), *records]
        write_jsonl(files[split], records)
    s = run.settings
    sets = [f"seed={s.seed}", "epochs=2", "batch_size=32", "lr=2e-4", f"max_length={s.context}", *args.set]
    config = load_config(RMConfig, None, sets)
    summary = run_rm(
        model_dir=sft_dir,
        data=files["train"],
        val_data=files["validation"],
        norm_data=run.path("data", "demonstrations_train.jsonl"),
        out=out / "rm",
        config=config,
        changed_keys=set(config.model_fields_set),
    )
    return {
        "sources": args.sources,
        "sets": args.set,
        "val_accuracy": summary["val_accuracy"],
        **judge_rm(run, out / "rm" / "final"),
    }


def judge_rm(run: Run, rm_dir: Path) -> dict:
    """An RM on SFT's own samples of the test prompts, held against the gold standard."""
    P = run.test_prompts
    sft = [s[0] for s in run.samples(run.path("sft", "final"), P, 1, "eval")]
    cands = run.samples(run.path("sft", "final"), P, 16, "bon")
    gold = [run.gold([p] * len(cs), cs) for p, cs in zip(P, cands, strict=True)]
    rm = score_responses(rm_dir, P, cands)
    out = {}
    for n in (2, 4, 8, 16):
        best = [cs[max(range(n), key=lambda j: r[j])] for cs, r in zip(cands, rm, strict=True)]
        out[f"best_of_{n}"] = {
            "gold": statistics.mean(run.gold(P, best)),
            "win_vs_sft": run.win(P, best, sft),
        }
    right = pairs = 0
    for g, r in zip(gold, rm, strict=True):
        for i in range(len(g)):
            for j in range(i + 1, len(g)):
                if abs(g[i] - g[j]) > 1e-9:
                    pairs += 1
                    right += (g[i] - g[j]) * (r[i] - r[j]) > 0
    out["pairwise_vs_gold_on_sft_samples"] = right / pairs
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    for name in ("ppo", "rm"):
        s = sub.add_parser(name)
        s.add_argument("run")
        s.add_argument("--seed", type=int, required=True)
        s.add_argument("--out", required=True)
        s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sub.choices["ppo"].add_argument("--gold", action="store_true", help="reward = 5 x the gold score")
    sub.choices["ppo"].add_argument("--rm", help="an RM other than RUN/round1/rm/final")
    r = sub.choices["rm"]
    r.add_argument("--sources", choices=["mix", "sft", "policy"], default="mix")
    r.add_argument("--policy", help="with --sources policy: the other policy (e.g. an earlier PPO final/)")
    r.add_argument("--data-from", help="reuse the comparisons of an earlier attempt's --out")
    r.add_argument("--add-data", help="add an earlier round's comparisons (an attempt's --out)")
    r.add_argument("--prompts", type=int, default=3000)
    r.add_argument("--k", type=int, nargs=2, default=[4, 9])
    args = p.parse_args()
    quiet_transformers()
    t0 = time.perf_counter()
    result = attempt_ppo(args) if args.what == "ppo" else attempt_rm(args)
    result = {"what": args.what, "run": args.run, "seed": args.seed, "out": args.out, **result}
    result["seconds"] = time.perf_counter() - t0
    print(json.dumps(result))
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
