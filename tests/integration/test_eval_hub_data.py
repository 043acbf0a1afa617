"""Benchmark data named by its Hugging Face Hub id, ORG/NAME[@REVISION][:FILE], read offline from a Hub cache
laid out as `hf download --repo-type dataset` leaves it (blobs, snapshots linking to them, refs),
in the Hub's own formats (Parquet, JSONL, CSV): the same questions, prompts and pairs as from the files."""

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from instructrl.cli import main
from instructrl.evaluation.benchmarks import bias as bs
from instructrl.evaluation.benchmarks import toxicity as tx
from instructrl.evaluation.benchmarks.truthfulqa import read_truthfulqa, to_multiple_choice

FIXTURES = Path(__file__).parent.parent / "fixtures"
TQA = FIXTURES / "truthfulqa-sample.csv"
RTP = [FIXTURES / "rtp-nontoxic-sample.jsonl", FIXTURES / "rtp-toxic_challenging-sample.jsonl"]
COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture()
def dataset_cache(tmp_path, monkeypatch):
    """add(repo, {path in the dataset: bytes}, refs): a dataset in a fresh Hub cache made this process's cache
    (huggingface_hub reads HF_HUB_CACHE once, at import: the constant is what it uses)."""
    import huggingface_hub

    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))

    def add(repo: str, files: dict[str, bytes], refs=("main",), commit: str = COMMIT) -> Path:
        root = cache / f"datasets--{repo.replace('/', '--')}"
        snapshot = root / "snapshots" / commit
        for name, data in files.items():
            blob = root / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = snapshot / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(blob)
        for ref in refs:
            (root / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
            (root / "refs" / ref).write_text(commit)
        return snapshot

    return add


def parquet_bytes(rows: list[dict], metadata: dict | None = None) -> bytes:
    table = pa.Table.from_pylist(rows)
    if metadata is not None:
        table = table.replace_schema_metadata({b"huggingface": json.dumps(metadata).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def generation_row(q) -> dict:
    return {"question": q.question, "best_answer": q.mc1_choices[0],
            "correct_answers": q.correct_answers, "incorrect_answers": q.incorrect_answers}  # fmt: skip


def run(*args: str) -> int:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code


def test_truthfulqa_by_hub_id_reads_the_multiple_choice_parquet_as_the_csv(dataset_cache):
    questions = read_truthfulqa(TQA)
    snapshot = dataset_cache(
        "truthfulqa/truthful_qa",
        {
            "README.md": b"# TruthfulQA\n",
            "multiple_choice/validation-00000-of-00001.parquet": parquet_bytes(
                [to_multiple_choice(q) for q in questions]
            ),
            "generation/validation-00000-of-00001.parquet": parquet_bytes(
                [generation_row(q) for q in questions]
            ),
        },
        refs=("main", "v1"),
    )
    got = read_truthfulqa("truthfulqa/truthful_qa")  # by default the layout the harness scores
    assert got == questions and got[2].source.endswith("multiple_choice/validation-00000-of-00001.parquet:3")
    assert got[0].source.startswith(str(snapshot))
    assert read_truthfulqa(f"truthfulqa/truthful_qa@{COMMIT}") == questions
    assert read_truthfulqa("truthfulqa/truthful_qa@v1:generation/validation-*.parquet") == questions


def test_eval_truthfulqa_by_hub_id_scores_as_the_csv_and_records_the_files(
    dataset_cache, tiny_model_dir, tmp_path
):
    questions = read_truthfulqa(TQA)[:3]
    dataset_cache(
        "truthfulqa/truthful_qa",
        {
            "multiple_choice/validation-00000-of-00001.parquet": parquet_bytes(
                [to_multiple_choice(q) for q in questions]
            )
        },
    )
    csv_file = tmp_path / "tqa.csv"
    csv_file.write_text("".join(TQA.read_text(encoding="utf-8").splitlines(True)[:4]), encoding="utf-8")
    docs = []
    for data in ("truthfulqa/truthful_qa", csv_file):
        out = tmp_path / f"out{len(docs)}"
        code = run(
            "eval",
            "truthfulqa",
            "--model",
            f"m={tiny_model_dir}",
            "--data",
            data,
            "--out",
            out,
            "--no-generation",
        )
        assert code == 0
        docs.append(json.loads((out / "results.json").read_text()))
    assert docs[0]["models"] == docs[1]["models"]
    assert docs[0]["settings"]["data"] == "truthfulqa/truthful_qa"
    assert docs[0]["settings"]["data_files"][0].endswith(
        f"{COMMIT}/multiple_choice/validation-00000-of-00001.parquet"
    )


def test_rtp_and_bias_data_by_hub_id_read_as_their_files(dataset_cache, tmp_path):
    prompts = tx.read_rtp(RTP)
    lines = b"".join(p.read_bytes() for p in RTP)
    dataset_cache("allenai/real-toxicity-prompts", {"prompts.jsonl": lines, "README.md": b"RTP\n"})
    got = tx.read_rtp(["allenai/real-toxicity-prompts"])
    assert [(p.text, p.toxicity) for p in got] == [(p.text, p.toxicity) for p in prompts]
    # as Parquet, the Hub's conversion of the same records: errors name the file and the row
    rows = [json.loads(line) for line in lines.decode().splitlines()]
    dataset_cache(
        "org/rtp", {"data/train-00000-of-00001.parquet": parquet_bytes(rows)}, refs=("refs/convert/parquet",)
    )
    got = tx.read_rtp(["org/rtp@refs/convert/parquet"], limit=4)
    assert [p.toxicity for p in got] == [p.toxicity for p in prompts[:4]] and got[3].source.endswith(
        ".parquet:4"
    )

    # CrowS-Pairs as a CSV named with :FILE, and as Parquet whose bias_type is a `datasets` ClassLabel
    crows = bs.read_crows(FIXTURES / "crows-pairs-sample.csv")
    dataset_cache("nyu-mll/crows_pairs", {"data/crows_pairs_anonymized.csv": (FIXTURES / "crows-pairs-sample.csv").read_bytes(),
                                          "data/prompts.csv": b"prompt,source\n"})  # fmt: skip
    assert bs.detect("nyu-mll/crows_pairs:data/crows_pairs_anonymized.csv") == "crows"
    got = bs.read_crows("nyu-mll/crows_pairs:data/crows_pairs_anonymized.csv")
    assert [(p.more, p.less, p.bias_type) for p in got] == [(p.more, p.less, p.bias_type) for p in crows]
    assert got[0].source.endswith(f"{COMMIT}/data/crows_pairs_anonymized.csv:2")
    names = sorted({p.bias_type for p in crows})
    features = {"bias_type": {"_type": "ClassLabel", "names": names}}
    table = [{"sent_more": p.more, "sent_less": p.less, "bias_type": names.index(p.bias_type)} for p in crows]
    dataset_cache("org/crows", {"test.parquet": parquet_bytes(table, {"info": {"features": features}})})
    assert [p.bias_type for p in bs.read_crows("org/crows")] == [p.bias_type for p in crows]

    # Winogender from a Hub copy of all_sentences.tsv, with occupations-stats.tsv beside it
    snapshot = dataset_cache(
        "org/winogender",
        {"all_sentences.tsv": (FIXTURES / "winogender-sample.tsv").read_bytes(),
         "occupations-stats.tsv": (FIXTURES / "winogender-occupations-stats.tsv").read_bytes()},
    )  # fmt: skip
    assert bs.detect("org/winogender:all_sentences.tsv") == "winogender"
    assert [w.sentence for w in bs.read_winogender("org/winogender:all_sentences.tsv")] == [
        w.sentence for w in bs.read_winogender(FIXTURES / "winogender-sample.tsv")
    ]
    assert bs.read_occupation_stats("org/winogender:occupations-stats.tsv")["technician"] == pytest.approx(
        40.34
    )
    assert (snapshot / "all_sentences.tsv").is_symlink()


def _not_cached(tmp_path, dataset_cache, tiny_model_dir):
    dataset_cache("other/dataset", {"x.jsonl": b"{}\n"})
    args = ["eval", "truthfulqa", "--model", f"m={tiny_model_dir}", "--data", "truthfulqa/truthful_qa@v2"]
    return args, "hf download truthfulqa/truthful_qa --repo-type dataset --revision v2"


def _not_cached_suite(tmp_path, dataset_cache, tiny_model_dir):
    dataset_cache("other/dataset", {"x.jsonl": b"{}\n"})
    args = ["eval", "suite", "--model", f"m={tiny_model_dir}", "--toxicity", "allenai/real-toxicity-prompts"]
    return args, "hf download allenai/real-toxicity-prompts --repo-type dataset"


def _ambiguous(tmp_path, dataset_cache, tiny_model_dir):
    dataset_cache(
        "org/bias",
        {"a/crows.csv": b"sent_more,sent_less,bias_type\nA,B,age\n", "b/all_sentences.tsv": b"x\n"},
    )
    args = ["eval", "bias", "--model", f"m={tiny_model_dir}", "--data", "org/bias"]
    return args, "holds 2 data files (a/crows.csv, b/all_sentences.tsv); name one with org/bias:FILE"


def _no_such_file_in_dataset(tmp_path, dataset_cache, tiny_model_dir):
    dataset_cache("allenai/real-toxicity-prompts", {"prompts.jsonl": b"{}\n"})
    args = [
        "eval",
        "toxicity",
        "--model",
        f"m={tiny_model_dir}",
        "--data",
        "allenai/real-toxicity-prompts:test.jsonl",
    ]
    return args, "has no file 'test.jsonl'; its data files: prompts.jsonl"


def _bad_parquet_row(tmp_path, dataset_cache, tiny_model_dir):
    rows = [to_multiple_choice(q) for q in read_truthfulqa(TQA)[:3]]
    rows[1]["mc2_targets"]["labels"] = rows[1]["mc2_targets"]["labels"][:-1]
    dataset_cache(
        "truthfulqa/truthful_qa", {"multiple_choice/validation-00000-of-00001.parquet": parquet_bytes(rows)}
    )
    args = ["eval", "truthfulqa", "--model", f"m={tiny_model_dir}", "--data", "truthfulqa/truthful_qa"]
    return args, "validation-00000-of-00001.parquet:2: field 'mc2_targets': "


def _missing_local_file(tmp_path, dataset_cache, tiny_model_dir):
    args = ["eval", "toxicity", "--model", f"m={tiny_model_dir}", "--data", "data/rtp.jsonl"]
    return args, "data/rtp.jsonl: no such file (expected RealToxicityPrompts JSONL)"


@pytest.mark.parametrize(
    "make",
    [
        _not_cached,
        _not_cached_suite,
        _ambiguous,
        _no_such_file_in_dataset,
        _bad_parquet_row,
        _missing_local_file,
    ],
)
def test_hub_data_that_cannot_be_read_exits_2_saying_why_and_writes_nothing(
    tmp_path, dataset_cache, tiny_model_dir, capsys, make
):
    args, expected = make(tmp_path, dataset_cache, tiny_model_dir)
    out = tmp_path / "out"
    assert run(*args, "--out", out) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert expected in err and "Traceback" not in err, err
    assert not out.exists()
