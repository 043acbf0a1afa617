"""Rejection-sampling fine-tuning (best-of-N distillation, as Llama 2 did before PPO; Touvron et al. 2023), probed
on a finished full demo run: a scratch probe for issue 22, not a library step yet.

    python benchmarks/rs_probe.py RUN REWARD_DIR OUT N ALPHA LR EPOCHS [TAG]

N samples of RUN's SFT model per training prompt (seeded), the best by REWARD_DIR's score + ALPHA * log pi_SFT
(empty samples never chosen), SFT from RUN's SFT model on those answers (the demo's SFT recipe with LR and
EPOCHS), then one answer per evaluation prompt with the evaluation's seeds, judged against SFT's answer by
the held-out labelers (RUN's evaluation prompts and SFT answers, regenerated as rm_levers.py does: OUT's
sft16.json must exist, copied from an rm_levers.py OUT). Prints the win rate, its 95% lower end and gold scores.
"""

import json
import sys
from pathlib import Path

from instructrl.datasets.io import write_jsonl
from instructrl.demo import pipeline as P
from instructrl.demo.labelers import make_labelers
from instructrl.demo.settings import TEMPLATE, DemoSettings, sft_config
from instructrl.demo.world import World
from instructrl.evaluation.models import score_responses
from instructrl.sft.train import run_sft

sys.path.insert(0, str(Path(__file__).parent))
from rm_levers import loglikelihoods  # noqa: E402  (log pi_SFT, as rm_levers.py measures it)


def main() -> None:
    run, reward_dir, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    n, alpha, lr, epochs = int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
    tag = sys.argv[8] if len(sys.argv) > 8 else ""
    out.mkdir(parents=True, exist_ok=True)
    s = DemoSettings.full(json.loads((run / "settings.json").read_text())["seed"])
    world = World(s.seed)
    labelers = make_labelers(world, s.n_train_labelers, s.n_heldout_labelers, seed=s.seed)
    demo = P.Demo(
        out=run,
        settings=s,
        world=world,
        train_labelers=[x for x in labelers if x.group == "train"],
        heldout_labelers=[x for x in labelers if x.group == "heldout"],
    )
    prompts = P.split_prompts(demo, "train")
    texts = [p.prompt for p in prompts]
    model, tok = P.load_policy(run / "sft" / "final")
    cache = out / "cands.json"
    if not cache.exists():
        seed = P.hash_seed(s.seed, "rs")
        candidates = P.generate(demo, model, tok, texts, k=n, seed=seed, desc="rs candidates")
        cache.write_text(json.dumps([candidates, loglikelihoods(model, tok, TEMPLATE, texts, candidates)]))
    candidates, logp = json.loads(cache.read_text())
    name = f"sft{tag}_a{alpha}_lr{lr}_e{epochs}"
    if not (out / name / "summary.json").exists():  # a finished probe is only evaluated again
        rm = score_responses(reward_dir, texts, candidates)
        best = [
            cs[max((j for j in range(n) if cs[j].strip()), key=lambda j: r[j] + alpha * lp[j], default=0)]
            for cs, r, lp in zip(candidates, rm, logp, strict=True)
        ]
        chosen = sum(map(world.gold_score, texts, best)) / len(texts)
        one = sum(world.gold_score(t, c[0]) for t, c in zip(texts, candidates, strict=True)) / len(texts)
        print(f"gold of the chosen answers {chosen:.3f}, of one sample {one:.3f}")
        data = out / f"best{tag}_a{alpha}.jsonl"
        rows = [
            {"prompt": t, "response": b, "user_id": p.user_id}
            for t, b, p in zip(texts, best, prompts, strict=True)
            if b.strip()
        ]
        write_jsonl(data, rows)
        config = sft_config(s).model_copy(update={"lr": lr, "epochs": epochs})
        run_sft(
            model_dir=run / "sft" / "final",
            data=data,
            val_data=run / "data" / "demonstrations_validation.jsonl",
            out=out / name,
            config=config,
            resume=(out / name / "config.yaml").exists(),
        )
    evaluation = json.loads((out / "sft16.json").read_text())
    eval_prompts, eval_candidates = evaluation["prompts"], evaluation["candidates"]
    tuned, tuned_tok = P.load_policy(out / name / "final")
    seed = P.hash_seed(s.seed, "eval")
    answers = {
        "sft": [c[0] for c in eval_candidates],
        "rs": [r[0] for r in P.generate(demo, tuned, tuned_tok, eval_prompts, seed=seed, desc="rs answers")],
    }
    win = P._win_rates(demo.heldout_labelers, eval_prompts, answers, ("rs",))["rs"]
    gold = {
        m: round(sum(map(world.gold_score, eval_prompts, a)) / len(eval_prompts), 3)
        for m, a in answers.items()
    }
    print("RESULT", name, round(win["mean"], 3), round(win["ci_low"], 3), "gold", gold)


if __name__ == "__main__":
    main()
