"""`instructrl label add-user / import-prompts / export`: output, and user errors as exit 2 without a traceback."""

from __future__ import annotations

import json

import pytest

from instructrl import cli
from labeling.helpers import PROMPTS, jsonl


@pytest.fixture(autouse=True)
def only_label_command(monkeypatch):
    # Just this stage's subcommand: the CLI must not depend on the other stages to parse `label`.
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["instructrl.labeling.cli"])


def run(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_add_user_import_prompts_and_export(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'labels.db'}"
    pw = tmp_path / "pw"
    pw.write_text("a-long-password\n")
    code, out, _ = run(
        capsys,
        "label",
        "add-user",
        "ann",
        "--role",
        "labeler",
        "--group",
        "heldout",
        "--password-file",
        str(pw),
        "--db",
        db,
    )
    assert code == 0 and out.strip() == "created labeler 'ann' (group heldout)"

    rows = [*PROMPTS, PROMPTS[0], {"prompt": "Call me on 555-123-4567", "user_id": "zed"}]
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_bytes(jsonl(rows))
    code, out, _ = run(capsys, "label", "import-prompts", str(prompts_file), "--db", db, "--json")
    assert code == 0
    report = json.loads(out)
    assert (report["received"], report["kept"], report["dropped_duplicate"], report["dropped_pii"]) == (
        8,
        6,
        1,
        1,
    )
    assert sum(s["users"] for s in report["splits"].values()) == 6

    # the same file again: every prompt is now a duplicate of a stored one
    code, out, _ = run(capsys, "label", "import-prompts", str(prompts_file), "--db", db)
    assert code == 0 and "kept 0" in out and "dropped 7 duplicates" in out

    code, out, _ = run(capsys, "label", "export", "--out", str(tmp_path / "out"), "--db", db)
    assert code == 0
    for split in ("train", "validation", "test"):
        assert (tmp_path / "out" / split / "comparisons.jsonl").is_file()
        assert (tmp_path / "out" / split / "demonstrations.jsonl").is_file()
    assert (tmp_path / "out" / "ab.jsonl").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["label", "import-prompts", "missing.csv"], "missing.csv: no such file"),
        (
            ["label", "add-user", "bob", "--role", "admin", "--password-file", "nope"],
            "nope: password file not found",
        ),
        (["label", "export", "--out", "x", "--db", "mysql://u@h/db"], "unsupported database 'mysql'"),
        (["label", "export", "--out", "x", "--db", "not a url"], "not a database URL"),
    ],
)
def test_user_errors_exit_2_with_a_message_and_no_traceback(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_malformed_prompt_file_and_duplicate_user_are_user_errors(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'labels.db'}"
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,user_id\nfine,u1\nbroken,u2,extra\n")
    code, _, err = run(capsys, "label", "import-prompts", str(bad), "--db", db)
    assert code == 2 and "bad.csv:3: 3 columns, the header has 2" in err
    pw = tmp_path / "pw"
    pw.write_text("short\n")
    code, _, err = run(
        capsys, "label", "add-user", "amy", "--role", "admin", "--password-file", str(pw), "--db", db
    )
    assert code == 2 and "at least 10 characters" in err
    pw.write_text("long-enough-pw\n")
    assert (
        run(capsys, "label", "add-user", "amy", "--role", "admin", "--password-file", str(pw), "--db", db)[0]
        == 0
    )
    code, _, err = run(
        capsys, "label", "add-user", "amy", "--role", "admin", "--password-file", str(pw), "--db", db
    )
    assert code == 2 and "already exists" in err


def test_add_user_without_password_file_or_terminal_says_what_to_do(tmp_path, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run(
        capsys, "label", "add-user", "amy", "--role", "admin", "--db", f"sqlite:///{tmp_path / 'l.db'}"
    )
    assert code == 2 and "--password-file" in err
