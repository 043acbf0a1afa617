"""--model, --policy and --reward take a Hugging Face Hub id (ORG/NAME, optionally @REVISION) as well as a
directory, and transformers resolves it from its cache. The tests build that cache locally, run offline
(conftest sets HF_HUB_OFFLINE=1) and call the command line in-process: a subprocess's imports alone took
9 s on the shared cores."""

import pytest
from conftest import make_demos, write_jsonl

from instructrl.cli import main
from instructrl.errors import UserError
from instructrl.models.checkpoint import CheckpointMeta
from instructrl.models.loading import load_causal_lm, resolve_model


def instructrl(*args: str) -> int:
    with pytest.raises(SystemExit) as exit:
        main(list(args))
    return int(exit.value.code or 0)


def test_sft_runs_from_a_hub_id_in_the_offline_cache(hub_cache, tmp_path):
    demos = write_jsonl(tmp_path / "d.jsonl", make_demos(32))
    out = tmp_path / "sft"
    sets = ["epochs=1", "batch_size=16", "mixed_precision=no"]
    code = instructrl(
        "sft", "--model", "org/tiny-gpt2", "--data", str(demos), "--out", str(out),
        *[a for s in sets for a in ("--set", s)],
    )  # fmt: skip
    assert code == 0 and (out / "final" / "config.json").is_file()


def test_a_hub_id_that_is_not_cached_fails_offline_with_how_to_download_it(hub_cache, tmp_path, capsys):
    demos = write_jsonl(tmp_path / "d.jsonl", make_demos(8))
    assert (
        instructrl("sft", "--model", "org/missing", "--data", str(demos), "--out", str(tmp_path / "o")) == 2
    )
    err = capsys.readouterr().err
    assert "Traceback" not in err and "org/missing: no such model directory" in err
    assert "HF_HUB_OFFLINE" in err and "`hf download org/missing`" in err
    assert not (tmp_path / "o").exists()


def test_a_revision_after_the_id_is_resolved_by_transformers(hub_cache):
    source = resolve_model("org/tiny-gpt2@v1")
    assert (source.name, source.revision, source.is_dir) == ("org/tiny-gpt2", "v1", False)
    assert load_causal_lm(source, dropout=False).config.model_type == "gpt2"
    assert CheckpointMeta.find("org/tiny-gpt2") is None  # not an instructrl checkpoint: no notes, no error
    with pytest.raises(UserError, match="hf download org/tiny-gpt2 --revision v2"):
        resolve_model("org/tiny-gpt2@v2")
