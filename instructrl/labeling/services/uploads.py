"""Parsing uploaded files (CSV or JSONL) into validated records, with errors that name the line."""

from __future__ import annotations

import csv
import io
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from instructrl.datasets.io import json_object
from instructrl.errors import UserError
from instructrl.labeling.schemas import NUL_MESSAGE
from instructrl.labeling.services import TooLarge

M = TypeVar("M", bound=BaseModel)

MAX_FILENAME = 200
"""An upload's name is stored in String(255) columns, as itself and as a task's source ('upload:NAME')."""


def check_size(*, data: bytes, limit: int, filename: str) -> None:
    if len(data) > limit:
        raise TooLarge(
            f"{filename}: {len(data):,} bytes is over the upload limit of {limit:,} bytes; "
            f"split the file, or raise INSTRUCTRL_LABEL_MAX_UPLOAD_BYTES"
        )


def check_filename(filename: str) -> None:
    if len(filename) > MAX_FILENAME:
        raise UserError(
            f"the file name has {len(filename):,} characters; rename the file to at most {MAX_FILENAME}"
        )
    if "\x00" in filename:
        raise UserError("the file name contains a NUL character (\\x00); rename the file")


def decode(*, data: bytes, filename: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{filename}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None


def _problems(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"field '{loc}': missing" if err["type"] == "missing" else f"field '{loc}': {msg}")
    return "; ".join(parts)


def parse_rows(*, data: bytes, filename: str, model: type[M], limit: int, csv_ok: bool = True) -> list[M]:
    """Records of `model` from a JSONL file or (when `csv_ok`) a CSV file with a header row.

    The format follows the name (.csv, .jsonl, .json), else the first character ('{' means JSONL).
    Raises UserError naming the first bad line; an empty file is an error too.
    """
    check_filename(filename)
    check_size(data=data, limit=limit, filename=filename)
    text = decode(data=data, filename=filename)
    lower = filename.lower()
    is_csv = lower.endswith(".csv") or (
        not lower.endswith((".jsonl", ".json")) and not text.lstrip().startswith("{")
    )
    if is_csv and not csv_ok:
        raise UserError(f"{filename}: expected a JSONL file (one JSON object per line)")
    rows = _csv_rows(text, filename, model) if is_csv else _jsonl_rows(text, filename)
    out: list[M] = []
    for lineno, obj in rows:
        out.append(_validate(model, obj, f"{filename}:{lineno}"))
    if not out:
        raise UserError(f"{filename}: no records found (the file is empty)")
    return out


def _validate(model: type[M], obj: dict[str, Any], where: str) -> M:
    for key, value in obj.items():
        if _has_nul([key, value]):
            raise UserError(f"{where}: field '{key}': {NUL_MESSAGE}")
    try:
        return model.model_validate(obj)
    except ValidationError as e:
        raise UserError(f"{where}: {_problems(e)}") from None


def _has_nul(value: object) -> bool:
    """Whether any string in a parsed JSON value holds a NUL (a loop, not recursion: values nest deep)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str) and "\x00" in v:
            return True
        if isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v)
            stack.extend(v.values())
    return False


def _jsonl_rows(text: str, filename: str) -> list[tuple[int, dict[str, Any]]]:
    # Lines end at "\n" only: str.splitlines() also splits at U+2028, U+0085 and others that JSON strings
    # hold as they are (our own exports write them so), which refused valid files (issue 23).
    return [
        (lineno, json_object(line, f"{filename}:{lineno}"))
        for lineno, line in enumerate(text.split("\n"), start=1)
        if line.strip()
    ]


def _csv_rows(text: str, filename: str, model: type[BaseModel]) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return []
        header = [h.strip() for h in header]
        required = [name for name, f in model.model_fields.items() if f.is_required()]
        missing = [name for name in required if name not in header]
        if missing:
            raise UserError(
                f"{filename}:1: the CSV header must name the columns {', '.join(required)} "
                f"(missing: {', '.join(missing)}; found: {', '.join(header) or 'nothing'})"
            )
        rows = []
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                raise UserError(
                    f"{filename}:{reader.line_num}: {len(fields)} columns, the header has {len(header)} "
                    f"(quote fields that contain commas or line breaks)"
                )
            rows.append((reader.line_num, dict(zip(header, fields, strict=True))))
        return rows
    except csv.Error as e:
        raise UserError(f"{filename}:{reader.line_num}: malformed CSV ({e})") from None
