"""Reading and writing the JSONL record files, with errors that name file, line and field."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from instructrl.datasets.records import (
    KINDS,
    Comparison,
    Demonstration,
    PretrainText,
    PromptRecord,
    Record,
)
from instructrl.errors import UserError

R = TypeVar("R", bound=Record)

ASSISTANT = "\n\nAssistant:"


def expand_paths(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Files from a file, a directory (its *.jsonl and *.jsonl.gz, sorted) or several of either."""
    if isinstance(paths, str | Path):
        paths = [paths]
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted([*p.glob("*.jsonl"), *p.glob("*.jsonl.gz")])
            if not found:
                raise UserError(f"{p}: directory holds no *.jsonl or *.jsonl.gz files")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise UserError(f"{p}: no such file or directory")
    return out


def text_lines(path: Path) -> Generator[str, None, None]:
    """The lines of a UTF-8 text file (gzip-compressed if its name ends in .gz), line endings kept and a
    leading byte-order mark dropped. The data files of every command are read here, so bytes that are
    not UTF-8 are one UserError naming file, line and column, not a UnicodeDecodeError traceback.
    Lines split at b"\\n", a byte that is never part of a multi-byte UTF-8 character."""
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                column = len(raw[: e.start].decode("utf-8")) + 1
                raise UserError(
                    f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {column}); "
                    "save the file as UTF-8"
                ) from None
            yield line.removeprefix("\ufeff") if lineno == 1 else line


def iter_json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a bad line is a UserError naming it.

    A `.json` file holding one array of objects (like Alpaca's alpaca_data.json) is read too; its
    "line numbers" are then item numbers.
    """
    if path.suffix == ".json":
        try:
            items = json.loads("".join(text_lines(path)))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(items, list):
            raise UserError(f"{path}: expected a JSON array of objects, or use JSON Lines (.jsonl)")
        for i, obj in enumerate(items, start=1):
            if not isinstance(obj, dict):
                raise UserError(f"{path}: item {i}: expected a JSON object, got {type(obj).__name__}")
            yield i, obj
        return
    for lineno, line in enumerate(text_lines(path), start=1):
        if line.strip():
            yield lineno, json_object(line, f"{path}:{lineno}")


def json_object(line: str, where: str) -> dict[str, Any]:
    """One line of JSON Lines as the object it must hold; anything else is a UserError that starts with
    `where` (FILE:LINE) and says how to fix it. The labeling app's uploads read their lines here too."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise UserError(f"{where}: nested too deeply to read (lists or objects inside each other)") from None
    except ValueError as e:  # after JSONDecodeError, a ValueError too: Python's limit on integer digits
        raise UserError(
            f"{where}: a number is too long to read ({e}); write it with at most 4,300 digits, or as a string"
        ) from None
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def split_hh_dialogue(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Anthropic HH-RLHF pair -> (prompt, chosen response, rejected response).

    Both strings hold the whole dialogue; they share it up to the last "\\n\\nAssistant:" turn.
    The prompt keeps that final "Assistant:" marker so the model knows whose turn it is.
    """
    cut_c, cut_r = chosen.rfind(ASSISTANT), rejected.rfind(ASSISTANT)
    if cut_c < 0 or cut_r < 0:
        raise ValueError("no '\\n\\nAssistant:' turn in chosen/rejected")
    prompt_c, prompt_r = chosen[: cut_c + len(ASSISTANT)], rejected[: cut_r + len(ASSISTANT)]
    if prompt_c != prompt_r:
        raise ValueError("chosen and rejected do not share the dialogue before the last Assistant turn")
    return (
        prompt_c.strip(),
        chosen[cut_c + len(ASSISTANT) :].strip(),
        rejected[cut_r + len(ASSISTANT) :].strip(),
    )


def normalise(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Map the accepted public alternative forms onto the canonical record fields."""
    if kind == "comparisons" and "responses" not in obj and "chosen" in obj and "rejected" in obj:
        rest = {k: v for k, v in obj.items() if k not in ("prompt", "chosen", "rejected")}
        chosen, rejected = obj["chosen"], obj["rejected"]
        if "prompt" in obj:
            return {"prompt": obj["prompt"], "responses": [chosen, rejected], "ranking": [0, 1], **rest}
        if not isinstance(chosen, str) or not isinstance(rejected, str):
            return obj  # let validation name the field
        prompt, chosen, rejected = split_hh_dialogue(chosen, rejected)
        return {"prompt": prompt, "responses": [chosen, rejected], "ranking": [0, 1], **rest}
    if kind == "demonstrations" and "response" not in obj and "instruction" in obj and "output" in obj:
        rest = {k: v for k, v in obj.items() if k not in ("instruction", "input", "output")}
        return {
            "prompt": alpaca_prompt(obj["instruction"], obj.get("input", "")),
            "response": obj["output"],
            **rest,
        }
    if kind in ("prompts", "eval_prompts") and "prompt" not in obj and "instruction" in obj:
        rest = {k: v for k, v in obj.items() if k not in ("instruction", "input", "output")}
        return {"prompt": alpaca_prompt(obj["instruction"], obj.get("input", "")), **rest}
    return obj


def alpaca_prompt(instruction: str, input_text: str) -> str:
    return f"{instruction}\n\n{input_text}" if input_text else instruction


def _describe(err: Any) -> str:
    loc = ".".join(str(x) for x in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        return f"field '{loc}': missing"
    return f"field '{loc}': {msg}" if loc else msg


def read_records(paths: str | Path | Iterable[str | Path], kind: str) -> list[Record]:
    """All records of `kind` (a key of `records.KINDS`: 'prompts', 'eval_prompts', 'demonstrations',
    'comparisons', 'pretrain', 'ab') from JSONL files.

    Raises UserError on the first bad line (file:line: field 'x': problem) or when nothing was found.
    """
    model = KINDS[kind]
    files = expand_paths(paths)
    out: list[Record] = []
    for path in files:
        for lineno, obj in iter_json_lines(path):
            try:
                record = model.model_validate(normalise(kind, obj))
                record._source = f"{path}:{lineno}"
                out.append(record)
            except ValidationError as e:
                problems = "; ".join(_describe(err) for err in e.errors())
                raise UserError(f"{path}:{lineno}: {problems}") from None
            except ValueError as e:
                raise UserError(f"{path}:{lineno}: {e}") from None
    if not out:
        raise UserError(f"{', '.join(map(str, files))}: no {kind} records found (the dataset is empty)")
    return out


def read_prompts(paths: str | Path | Iterable[str | Path]) -> list[PromptRecord]:
    return read_records(paths, "prompts")  # type: ignore[return-value]


def read_demonstrations(paths: str | Path | Iterable[str | Path]) -> list[Demonstration]:
    return read_records(paths, "demonstrations")  # type: ignore[return-value]


def read_comparisons(paths: str | Path | Iterable[str | Path]) -> list[Comparison]:
    return read_records(paths, "comparisons")  # type: ignore[return-value]


def read_pretrain(paths: str | Path | Iterable[str | Path]) -> list[PretrainText]:
    return read_records(paths, "pretrain")  # type: ignore[return-value]


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a file so that readers see the old content or the new, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_json_line(record: BaseModel | dict[str, Any]) -> str:
    obj = record.model_dump(mode="json", exclude_none=True) if isinstance(record, BaseModel) else record
    return json.dumps(obj, ensure_ascii=False)


def write_jsonl(path: str | Path, records: Iterable[BaseModel | dict[str, Any]]) -> int:
    """Write records atomically, one JSON object per line; returns the count."""
    lines = [to_json_line(r) for r in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)
