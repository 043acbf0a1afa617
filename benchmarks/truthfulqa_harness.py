"""instructrl's TruthfulQA MC1 / MC2 (and HellaSwag acc / acc_norm) next to lm-evaluation-harness's on the
same model and questions.

Builds a random-weight GPT-2 (2 layers, width 64, 1024 positions) with a byte-level BPE tokenizer trained on
the questions, writes the questions in the Hugging Face `multiple_choice` JSONL layout, and scores them with
`instructrl.evaluation.benchmarks.truthfulqa.mc_scores` here and with the harness's own truthfulqa_mc1 /
truthfulqa_mc2 task files (included from its installed package, so its prompt, choices and MC2 code are the
ones compared) pointed at that local JSONL: nothing is downloaded. The same questions also go through the
harness's hellaswag task as HellaSwag-style records (ctx_a = the question, the MC1 choices as endings, the
correct one at a rotating position, a "[title]" marker in some) against `eval tax`'s acc / acc_norm. Writes
both means, the per-question values, and the largest differences to
benchmarks/results/truthfulqa_harness.json.

The harness lives in its own environment, not a dependency of instructrl (git-ignored, next to .venv).
Install torch first and pinned, or pip pulls a CUDA build of several GB; lm-eval 0.4.13 does not pull
transformers itself:

    python3 -m venv .venv-lmeval
    .venv-lmeval/bin/pip install torch==2.13.0
    .venv-lmeval/bin/pip install lm-eval==0.4.13 transformers==5.24.0 accelerate==1.15.0

Run (from the repository root, with instructrl's environment):

    python benchmarks/truthfulqa_harness.py                         # the 10 questions of tests/fixtures
    python benchmarks/truthfulqa_harness.py --csv TruthfulQA.csv --n 100 --lmeval-python PATH
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TASK_YAML = """include: {harness_yaml}
task: {task}
tag: []
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files:
    validation: {data}
"""
HELLASWAG_YAML = (
    TASK_YAML
    + """training_split: null
validation_split: validation
"""
)


def hellaswag_records(questions) -> list[dict]:
    rows = []
    for i, q in enumerate(questions):
        endings = q.mc1_choices[:4]
        k = i % len(endings)  # the correct choice moves to position k
        endings = endings[1 : k + 1] + endings[:1] + endings[k + 1 :]
        ctx_b = "so [title] the answer is" if i % 3 == 0 else "the answer is"
        rows.append(
            {
                "activity_label": "TruthfulQA",
                "ctx_a": q.question,
                "ctx_b": ctx_b,
                "endings": endings,
                "label": str(k),
            }
        )
    return rows


def build_model(questions, out: Path, seed: int) -> Path:
    from instructrl.evaluation.benchmarks.truthfulqa import QA_PROMPT
    from instructrl.models.tiny import build_gpt2, save, train_tokenizer

    texts = [QA_PROMPT] + [" ".join([q.question, *q.mc2_choices]) for q in questions]
    tok = train_tokenizer(texts, vocab_size=1024, kind="bpe")
    model = build_gpt2(tok, n_layer=2, n_embd=64, n_head=4, n_positions=1024, seed=seed)
    return save(model, tok, out)


def run_harness(
    python: str, model_dir: Path, data: Path, hellaswag: Path, work: Path, batch_size: int
) -> dict[str, tuple[float, list[float]]]:
    """{metric: (mean, per-doc values in document order)} from the harness's log of samples."""
    pkg = subprocess.run(
        [python, "-c", "import lm_eval, os; print(os.path.dirname(lm_eval.__file__))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    tasks = work / "tasks"
    tasks.mkdir()
    for name in ("mc1", "mc2"):
        (tasks / f"local_truthfulqa_{name}.yaml").write_text(
            TASK_YAML.format(
                harness_yaml=f"{pkg}/tasks/truthfulqa/truthfulqa_{name}.yaml",
                task=f"local_truthfulqa_{name}",
                data=data,
            )
        )
    (tasks / "local_hellaswag.yaml").write_text(
        HELLASWAG_YAML.format(
            harness_yaml=f"{pkg}/tasks/hellaswag/hellaswag.yaml", task="local_hellaswag", data=hellaswag
        )
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [
        python, "-m", "lm_eval", "run",
        "--model", "hf",
        "--model_args", f"pretrained={model_dir},dtype=float32",
        "--tasks", "local_truthfulqa_mc1,local_truthfulqa_mc2,local_hellaswag",
        "--include_path", str(tasks),
        "--device", "cpu",
        "--batch_size", str(batch_size),
        "--output_path", str(work / "harness"),
        "--log_samples",
    ]  # fmt: skip
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"lm-eval failed ({p.returncode}):\n{p.stderr[-4000:]}")
    (results_file,) = glob.glob(str(work / "harness" / "**" / "results_*.json"), recursive=True)
    results = json.loads(Path(results_file).read_text())["results"]
    out = {}
    for task, metrics in [
        ("local_truthfulqa_mc1", {"acc": "mc1"}),
        ("local_truthfulqa_mc2", {"acc": "mc2"}),
        ("local_hellaswag", {"acc": "hellaswag/acc", "acc_norm": "hellaswag/acc_norm"}),
    ]:
        (samples_file,) = glob.glob(str(work / "harness" / "**" / f"samples_{task}_*.jsonl"), recursive=True)
        lines = Path(samples_file).read_text().splitlines()
        docs = sorted((json.loads(line) for line in lines), key=lambda s: s["doc_id"])
        for key, name in metrics.items():
            out[name] = (results[task][f"{key},none"], [float(d[key]) for d in docs])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", default=str(ROOT / "tests/fixtures/truthfulqa-sample.csv"), help="TruthfulQA CSV")
    p.add_argument("--n", type=int, default=0, help="first N questions (0: all)")
    p.add_argument("--lmeval-python", default=os.environ.get("LMEVAL_PYTHON", ".venv-lmeval/bin/python"))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/truthfulqa_harness.json"))
    args = p.parse_args()

    import torch

    from instructrl.evaluation.benchmarks.tax import choice_scores, read_task
    from instructrl.evaluation.benchmarks.truthfulqa import mc_scores, read_truthfulqa, to_multiple_choice
    from instructrl.models.loading import load_causal_lm, load_tokenizer

    questions = read_truthfulqa(args.csv)
    questions = questions[: args.n] if args.n else questions
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "truthfulqa_mc.jsonl"
        data.write_text("".join(json.dumps(to_multiple_choice(q)) + "\n" for q in questions))
        hellaswag = work / "hellaswag.jsonl"
        hellaswag.write_text("".join(json.dumps(r) + "\n" for r in hellaswag_records(questions)))
        model_dir = build_model(questions, work / "model", args.seed)

        t0 = time.perf_counter()
        torch.set_num_threads(1)
        model, tok = load_causal_lm(model_dir, dropout=False).eval(), load_tokenizer(model_dir)
        # the JSONL files the harness reads, through instructrl's loaders
        ours = mc_scores(model, tok, read_truthfulqa(data), batch_size=args.batch_size)
        hs = choice_scores(model, tok, read_task(hellaswag).items, args.batch_size)  # type: ignore[arg-type]
        ours.update({f"hellaswag/{k}": v for k, v in hs.items()})
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs = run_harness(args.lmeval_python, model_dir, data, hellaswag, work, args.batch_size)
        t_theirs = time.perf_counter() - t0
    version = subprocess.run(
        [args.lmeval_python, "-c", "import lm_eval; print(lm_eval.__version__)"],
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip

    report: dict = {
        "questions": len(questions),
        "source": os.path.relpath(args.csv, ROOT) if args.csv.startswith(str(ROOT)) else Path(args.csv).name,
        "model": "random-weight GPT-2, 2 layers, width 64, 1024 positions, byte-level BPE of 1024 tokens",
        "lm_eval_version": version,
        "seconds": {"instructrl": round(t_ours, 2), "lm_eval": round(t_theirs, 2)},
    }
    for name in ours:
        mine = sum(ours[name]) / len(ours[name])
        mean, per_doc = theirs[name]
        report[name] = {
            "instructrl": mine,
            "lm_eval": mean,
            "difference": mine - mean,
            "max_abs_difference_per_question": max(
                abs(a - b) for a, b in zip(ours[name], per_doc, strict=True)
            ),
            "per_question": {"instructrl": ours[name], "lm_eval": per_doc},
        }
    report["agree_to_1e-4"] = all(
        report[n]["max_abs_difference_per_question"] < 1e-4 and abs(report[n]["difference"]) < 1e-4
        for n in ours
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    summary = {k: v for k, v in report.items() if k not in ours}
    for n in ours:
        summary[n] = {k: v for k, v in report[n].items() if k != "per_question"}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
