"""`instructrl eval tax --task NAME=FILE`: lm-evaluation-harness's own tasks on local rows, in-process on the
weights instructrl loads, against the harness's own command line on the same files (the reference), and bad
files rejected with exit code 2 before anything is written."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import WORDS, run_cli, write_jsonl

# fp32 on the CPU on both sides: the harness's CLI loads the checkpoint itself (dtype=float32), instructrl
# loads it as every evaluation does (fp32); same batch size, so the same padded batches.
SHOTS, BATCH = "2", "4"


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def hellaswag_rows(n: int, seed: int) -> list[dict]:
    """Rows in the Hub dataset's layout (Rowan/hellaswag): the label a string, a WikiHow marker in some."""
    rng = random.Random(seed)
    return [
        {
            "ind": i,
            "activity_label": sentence(rng, 2),
            "ctx_a": sentence(rng, 6) + ".",
            "ctx_b": ("the [title] " if i % 3 == 0 else "") + sentence(rng, 2),
            # endings of one length: the models decide, not the number of tokens
            "endings": [sentence(rng, 4) + "." for _ in range(4)],
            "source_id": f"s{i}",
            "split": "val",
            "split_type": "indomain",
            "label": str(rng.randrange(4)),
        }
        for i in range(n)
    ]


def rte_rows(n: int, seed: int) -> list[dict]:
    """Rows in the Hub dataset's layout (nyu-mll/glue, config rte)."""
    rng = random.Random(seed)
    return [
        {"sentence1": sentence(rng, 9) + ".", "sentence2": sentence(rng, 5) + ".", "label": i % 2, "idx": i}
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("harness-data")
    return {
        "hellaswag": write_jsonl(d / "hellaswag_val.jsonl", hellaswag_rows(10, seed=0)),
        "hellaswag_train": write_jsonl(d / "hellaswag_train.jsonl", hellaswag_rows(5, seed=1)),
        "rte": write_jsonl(d / "rte_val.jsonl", rte_rows(10, seed=2)),
        "rte_train": write_jsonl(d / "rte_train.jsonl", rte_rows(5, seed=3)),
    }


@pytest.fixture(scope="module")
def lms(tmp_path_factory, data) -> dict[str, Path]:
    """Two 1-layer random GPT-2s (seeds 0 and 1) saved as checkpoints, sharing a byte-level BPE tokenizer
    trained on the rows. Embeddings of std 1 (not GPT-2's 0.02) make their choices their own rather than
    near-uniform, so the two disagree on items and their paired difference is not zero."""
    import torch

    from instructrl.models.tiny import build_gpt2, save, train_tokenizer

    texts = [line for f in data.values() for line in f.read_text().splitlines()] + ["True False"]
    tok = train_tokenizer(texts, vocab_size=400)
    root = tmp_path_factory.mktemp("harness-lms")
    out = {}
    for name, seed in (("base", 0), ("tuned", 1)):
        model = build_gpt2(tok, n_layer=1, n_embd=32, n_head=2, n_positions=1024, seed=seed)
        torch.nn.init.normal_(model.transformer.wte.weight, std=1.0)
        out[name] = save(model, tok, root / name)
    return out


# The reference: the harness's own task files, included from its package, pointed at the same local files;
# nothing but the data source changes.
REFERENCE_YAML = """include: {harness}/tasks/{yaml}
task: ref_{task}
tag: []
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files:
    validation: {val}
    train: {train}
"""


# The harness's console command (`lm-eval` = lm_eval.__main__:cli_evaluate) once per model, in one subprocess
# so that torch, transformers and the harness are imported once (a subprocess each cost 15 s of 2 busy cores).
HARNESS_CLI = """import json, sys
from lm_eval.__main__ import cli_evaluate
for argv in json.loads(sys.argv[1]):
    sys.argv = ["lm-eval", *argv]
    cli_evaluate()
"""


def harness_cli(models: dict[str, Path], data: dict[str, Path], work: Path) -> dict[str, tuple[dict, dict]]:
    """`lm-eval run --model hf ...` on each model: {model: (its results, its logged samples by task, in
    document order)}."""
    import lm_eval

    harness = Path(lm_eval.__file__).parent
    tasks = work / "tasks"
    tasks.mkdir(parents=True)
    for task, yaml in (("hellaswag", "hellaswag/hellaswag.yaml"), ("rte", "glue/rte/default.yaml")):
        (tasks / f"ref_{task}.yaml").write_text(
            REFERENCE_YAML.format(
                harness=harness, yaml=yaml, task=task, val=data[task], train=data[f"{task}_train"]
            )
        )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(work / "datasets-cache")}  # fmt: skip
    argv = ["run", "--model", "hf", "--device", "cpu", "--tasks", "ref_hellaswag,ref_rte", "--include_path",
            str(tasks), "--num_fewshot", SHOTS, "--batch_size", BATCH, "--log_samples"]  # fmt: skip
    runs = [
        [*argv, "--model_args", f"pretrained={model_dir},dtype=float32", "--output_path", str(work / name)]
        for name, model_dir in models.items()
    ]
    p = subprocess.run(
        [sys.executable, "-c", HARNESS_CLI, json.dumps(runs)], env=env, capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr[-3000:]
    out = {}
    for name in models:
        (results,) = (work / name).rglob("results_*.json")
        samples = {}
        for task in ("hellaswag", "rte"):
            (path,) = (work / name).rglob(f"samples_ref_{task}_*.jsonl")
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            samples[task] = sorted(rows, key=lambda r: r["doc_id"])
        out[name] = (json.loads(results.read_text())["results"], samples)
    return out


@pytest.mark.slow
def test_eval_tax_gives_the_harness_own_numbers_and_the_paired_difference(tmp_path, lms, data):
    out = tmp_path / "tax"
    code, stdout, err = run_cli(
        "eval", "tax", "--model", f"base={lms['base']}", "--model", f"tuned={lms['tuned']}", "--baseline", "base",
        "--task", f"hellaswag={data['hellaswag']}", "--fewshot", f"hellaswag={data['hellaswag_train']}",
        "--task", f"rte={data['rte']}", "--fewshot", f"rte={data['rte_train']}",
        "--num-fewshot", SHOTS, "--batch-size", BATCH, "--device", "cpu", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    assert "alignment tax: difference to base" in stdout
    doc = json.loads((out / "results.json").read_text())
    assert doc["settings"]["harness"]["tasks"]["hellaswag"]["num_fewshot"] == 2

    reference = harness_cli(lms, data, tmp_path / "reference")
    metrics = {"hellaswag": ("acc", "acc_norm"), "rte": ("acc",)}
    ours = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    for model, (results, samples) in reference.items():
        for task, names in metrics.items():
            for m in names:
                # the harness's own number, to 1e-6, over the same 10 items
                assert doc["models"][model][f"{task}/{m}"]["value"] == pytest.approx(
                    results[f"ref_{task}"][f"{m},none"], abs=1e-6
                )
                assert doc["models"][model][f"{task}/{m}"]["n"] == 10
                # and item by item: the same documents, the same few-shot prompts, the same scores
                mine = sorted(
                    (r for r in ours if r["model"] == model and r["task"] == task), key=lambda r: r["doc_id"]
                )
                assert [r[m] for r in mine] == [s[m] for s in samples[task]]
            assert [r["doc_hash"] for r in mine] == [s["doc_hash"] for s in samples[task]]
            assert [r["prompt_hash"] for r in mine] == [s["prompt_hash"] for s in samples[task]]

    # the paired difference: the mean over items of (tuned - base), from the harness's own per-item scores
    differences = set()
    for task, names in metrics.items():
        base, tuned = reference["base"][1][task], reference["tuned"][1][task]
        for m in names:
            per_item = [t[m] - b[m] for t, b in zip(tuned, base, strict=True)]
            differences.add(sum(per_item) / len(per_item))
            tax = doc["tax"]["tuned"][f"{task}/{m}"]
            assert tax["value"] == pytest.approx(sum(per_item) / len(per_item), abs=1e-12)
            assert tax["n"] == 10 and tax["ci95"][0] <= tax["value"] <= tax["ci95"][1]
    assert 0.0 not in differences, "the two models score the same on average: the test shows less"


HELLASWAG_OK = hellaswag_rows(3, seed=4)


@pytest.mark.parametrize(
    ("name", "content", "extra", "expected"),
    [
        ("squad.jsonl", HELLASWAG_OK, ["--task", "squadv2={f}"], "--task squadv2: not one of the harness tasks"),
        ("h.jsonl", [HELLASWAG_OK[0], {k: v for k, v in HELLASWAG_OK[1].items() if k != "ctx_b"}],
         ["--task", "hellaswag={f}"], "h.jsonl:2: field 'ctx_b': missing"),
        ("h.jsonl", [HELLASWAG_OK[0], {**HELLASWAG_OK[1], "label": "4"}], ["--task", "hellaswag={f}"],
         "h.jsonl:2: field 'label': '4' is not the index of one of 4 choices"),
        ("r.jsonl", [*rte_rows(2, seed=5), {**rte_rows(1, seed=6)[0], "label": "entailment"}], ["--task", "rte={f}"],
         "r.jsonl:3: field 'label': expected an integer, got 'entailment'"),
        ("h.jsonl", json.dumps(HELLASWAG_OK[0]).encode() + b"\n\xff\xfe\x00junk\n", ["--task", "hellaswag={f}"],
         "h.jsonl:2: not UTF-8"),
        ("h.parquet", b"PAR1\x00\x01junk", ["--task", "hellaswag={f}"], "h.parquet: not a readable Parquet file"),
        ("h.jsonl", HELLASWAG_OK, ["--task", "hellaswag={f}"], "20-shot needs the rows of hellaswag's train split"),
        ("h.jsonl", HELLASWAG_OK, ["--task", "hellaswag={f}", "--fewshot", "hellaswag={g}", "--num-fewshot", "4"],
         "4-shot needs 4 example rows, "),
        ("h.jsonl", HELLASWAG_OK, ["--task", "hellaswag={f}", "--fewshot", "hellaswag={f}", "--num-fewshot", "1"],
         "--fewshot hellaswag: the file of --task hellaswag itself"),
        ("h.jsonl", HELLASWAG_OK, ["--task", "hellaswag={f}", "--fewshot", "rte={f}", "--num-fewshot", "0"],
         "--fewshot rte: no --task rte=FILE"),
    ],
    ids=["unknown task", "missing field", "label out of range", "label of the wrong type", "not UTF-8",
         "not Parquet", "few-shot rows missing", "too few few-shot rows", "few-shot rows are the evaluated rows",
         "few-shot file of no task"],
)  # fmt: skip
def test_a_bad_harness_task_file_exits_2_naming_file_line_and_field(
    tmp_path, lms, name, content, extra, expected
):
    f, g = tmp_path / name, tmp_path / f"examples-{name}"  # g: a file of the same rows, for --fewshot
    for path in (f, g):
        path.write_bytes(content) if isinstance(content, bytes) else write_jsonl(path, content)
    code, _, err = run_cli(
        "eval", "tax", "--model", f"m={lms['base']}", "--baseline", "m", "--device", "cpu",
        *(a.format(f=f, g=g) for a in extra), "--out", tmp_path / "o",
    )  # fmt: skip
    assert code == 2 and expected in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_rows_the_checks_let_through_but_the_harness_cannot_read_exit_2_before_any_model_runs(
    tmp_path, lms, monkeypatch
):
    """No row found so far passes the checks and fails in the harness; a check that forgot a field stands in."""
    import dataclasses

    from instructrl.evaluation.benchmarks import harness

    spec = harness.TASKS["hellaswag"]
    fields = {k: v for k, v in spec.fields.items() if k != "ctx_b"}
    monkeypatch.setitem(harness.TASKS, "hellaswag", dataclasses.replace(spec, fields=fields))
    f = write_jsonl(
        tmp_path / "h.jsonl", [{k: v for k, v in r.items() if k != "ctx_b"} for r in HELLASWAG_OK]
    )
    code, _, err = run_cli(
        "eval", "tax", "--model", f"m={lms['base']}", "--baseline", "m", "--device", "cpu",
        "--task", f"hellaswag={f}", "--num-fewshot", "0", "--out", tmp_path / "o",
    )  # fmt: skip
    assert code == 2 and "h.jsonl: lm-evaluation-harness's hellaswag task could not read the rows" in err, err
    assert "ctx_b" in err and not (tmp_path / "o").exists()


def rows_of_every_task(n: int, seed: int) -> dict[str, list[dict]]:
    """A few rows of each task eval tax runs, in its Hub dataset's layout."""
    rng = random.Random(seed)
    date = {"day": "", "month": "", "year": ""}
    rows: dict[str, list[dict]] = {"hellaswag": hellaswag_rows(n, seed), "rte": rte_rows(n, seed)}
    rows["sglue_rte"] = [
        {"premise": r["sentence1"], "hypothesis": r["sentence2"], "label": r["label"]} for r in rows["rte"]
    ]
    rows["sst2"] = [{"sentence": sentence(rng, 6), "label": i % 2, "idx": i} for i in range(n)]
    rows["wsc"] = [
        {
            "text": "Mark told Pete many lies about himself, which Pete included in his book. He should have been "
            "more skeptical.",
            "span1_index": 0,
            "span2_index": 13,
            "span1_text": "Mark",
            "span2_text": "He",
            "idx": i,
            "label": i % 2,
        }
        for i in range(n)
    ]
    rows["wsc273"] = [
        {
            "text": "The trophy doesn't fit into the brown suitcase because it is too large.",
            "pronoun": "it",
            "pronoun_loc": 56,
            "quote": "it is too large",
            "quote_loc": 56,
            "options": ["The trophy", "the suitcase"],
            "label": i % 2,
            "source": "test",
        }
        for i in range(n)
    ]
    rows["drop"] = [
        {
            "section_id": "s",
            "query_id": f"q{i}",
            "passage": sentence(rng, 12) + f". It had {i} cats.",
            "question": "How many cats?",
            "answer": {"number": str(i), "date": date, "spans": []},
            "validated_answers": {"number": [str(i)], "date": [date], "spans": [[]]},
        }
        for i in range(n)
    ]
    rows["wmt14-fr-en"] = [{"translation": {"fr": f"le chat {i}", "en": f"the cat {i}"}} for i in range(n)]
    return rows


def test_every_task_eval_tax_offers_runs_offline_few_shot_with_corpus_metrics_kept_apart(tmp_path, lms):
    """Each per-item score averages to the harness's own number (checked inside); BLEU, TER and chrF are
    corpus scores, so their tax is a difference with an unpaired interval."""
    from instructrl.evaluation.benchmarks.harness import TASKS

    evaluated, examples = rows_of_every_task(3, seed=7), rows_of_every_task(3, seed=8)
    args = []
    for name in TASKS:
        args += ["--task", f"{name}={write_jsonl(tmp_path / f'{name}.jsonl', evaluated[name])}"]
        if TASKS[name].splits[0] != TASKS[name].splits[1]:
            args += ["--fewshot", f"{name}={write_jsonl(tmp_path / f'{name}-train.jsonl', examples[name])}"]
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        "eval", "tax", "--model", f"base={lms['base']}", "--model", f"tuned={lms['tuned']}", "--baseline", "base",
        *args, "--num-fewshot", "1", "--device", "cpu", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads((out / "results.json").read_text())
    metrics = {"hellaswag/acc", "hellaswag/acc_norm", "drop/em", "drop/f1", "wmt14-fr-en/bleu", "wmt14-fr-en/ter",
               "wmt14-fr-en/chrf"} | {f"{t}/acc" for t in ("rte", "sglue_rte", "sst2", "wsc", "wsc273")}  # fmt: skip
    assert set(doc["models"]["base"]) == set(doc["tax"]["tuned"]) == metrics
    assert all(m["n"] == 3 for per in doc["models"].values() for m in per.values())
    for m in ("bleu", "chrf", "ter"):
        key, tax = f"wmt14-fr-en/{m}", doc["tax"]["tuned"][f"wmt14-fr-en/{m}"]
        tuned, base = doc["models"]["tuned"][key], doc["models"]["base"][key]
        assert tax["value"] == tuned["value"] - base["value"]
        assert tax["ci95"][0] <= tax["value"] <= tax["ci95"][1]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 * 3 * len(TASKS)
    assert all(isinstance(s["answer"], str) for s in samples if s["task"] in ("drop", "wmt14-fr-en"))
    assert doc["settings"]["harness"]["tasks"]["wsc273"]["fewshot_file"] is None


def test_a_generation_task_on_a_model_whose_window_is_too_short_exits_2(tmp_path, tiny_model_dir):
    f = write_jsonl(tmp_path / "drop.jsonl", rows_of_every_task(2, seed=9)["drop"])
    code, _, err = run_cli(
        "eval", "tax", "--model", f"m={tiny_model_dir}", "--baseline", "m", "--device", "cpu",
        "--task", f"drop={f}", "--num-fewshot", "0", "--out", tmp_path / "o",
    )  # fmt: skip
    assert code == 2 and "--task drop: the harness generates up to 256 tokens" in err, err
    assert not (tmp_path / "o").exists()


def test_a_parquet_file_scores_as_the_same_rows_in_json_lines(tmp_path, lms):
    import pyarrow
    import pyarrow.parquet

    outputs = {}
    for fmt in ("jsonl", "parquet"):
        files = {}
        for split, rows in (("val", hellaswag_rows(4, seed=10)), ("train", hellaswag_rows(2, seed=11))):
            files[split] = tmp_path / f"{split}.{fmt}"
            if fmt == "jsonl":
                write_jsonl(files[split], rows)
            else:
                pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), files[split])
        code, _, err = run_cli(
            "eval", "tax", "--model", f"m={lms['base']}", "--baseline", "m", "--device", "cpu",
            "--task", f"hellaswag={files['val']}", "--fewshot", f"hellaswag={files['train']}", "--num-fewshot", "1",
            "--out", tmp_path / fmt,
        )  # fmt: skip
        assert code == 0, err
        # the metrics, and per row its line, the hashes of its document and prompt, its scores
        samples = (tmp_path / fmt / "samples.jsonl").read_text()
        outputs[fmt] = (json.loads((tmp_path / fmt / "results.json").read_text())["models"], samples)
    assert outputs["parquet"] == outputs["jsonl"]
