"""Where a benchmark's `--data` comes from: a local file, or a Hugging Face Hub dataset read from the cache.

A Hub dataset is named ORG/NAME[@REVISION][:FILE], e.g. `truthfulqa/truthful_qa` or
`allenai/real-toxicity-prompts@main:prompts.jsonl`, and is read offline from the local cache that
`hf download ORG/NAME --repo-type dataset` fills (HF_HUB_CACHE, default HF_HOME/hub): nothing is
downloaded at run time, as for models given by Hub id (`models/loading.py`). FILE is a path or glob inside
the dataset; without it a benchmark looks for its usual file (`defaults`), else takes the dataset's one data
file. Parquet, the Hub's own format, is read row by row; its errors name the file and the row (from 1) as a
text file's name its line: `file.parquet:3: field 'x': ...`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instructrl.errors import UserError

DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".csv", ".tsv", ".parquet")
# ORG/NAME, then optionally @REVISION (a branch, tag or commit: no ':'), then optionally :FILE
HUB_DATASET = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[\w./-]+))?(?::(?P<file>.+))?$")


@dataclass(frozen=True)
class HubDataset:
    repo: str  # ORG/NAME
    revision: str | None  # a branch, tag or commit; None is main
    file: str | None  # a path or glob inside the dataset; None lets the benchmark choose

    def __str__(self) -> str:
        return (
            self.repo
            + (f"@{self.revision}" if self.revision else "")
            + (f":{self.file}" if self.file else "")
        )

    @property
    def download(self) -> str:
        """The command that puts this dataset in the cache."""
        revision = f" --revision {self.revision}" if self.revision else ""
        return f"hf download {self.repo} --repo-type dataset{revision}"


def parse_hub_dataset(spec: str) -> HubDataset | None:
    m = HUB_DATASET.match(spec)
    return HubDataset(m["repo"], m["revision"], m["file"]) if m else None


def resolve_data(spec: str | Path, what: str, defaults: Sequence[str] = ()) -> list[Path]:
    """The local files a `--data` value names: the file itself, or the matching files of a cached Hub
    dataset (sorted, so a sharded split reads in order). A path that exists wins over a Hub id spelled the
    same; a missing file or an uncached dataset is a UserError saying how to get it."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        raise UserError(f"{text}: a folder; pass a file ({what}) or a Hub dataset ORG/NAME[@REVISION][:FILE]")
    hub = None if path.exists() or text.startswith((".", "/", "~")) else parse_hub_dataset(text)
    if hub is None or hub.repo.endswith(DATA_SUFFIXES):
        raise UserError(
            f"{text}: no such file (expected {what}); pass a file, or a Hugging Face Hub dataset "
            "ORG/NAME[@REVISION][:FILE] downloaded into the local cache"
        )
    return _pick(hub_snapshot(hub), hub, what, defaults)


def hub_snapshot(hub: HubDataset) -> Path:
    """The cached snapshot folder of a Hub dataset at its revision, never downloading."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(
            snapshot_download(hub.repo, repo_type="dataset", revision=hub.revision, local_files_only=True)
        )
    except ValueError as e:  # huggingface_hub's HFValidationError: not a valid repo id or revision
        raise UserError(f"{hub}: not a valid Hugging Face Hub dataset id ({e})") from None
    except LocalEntryNotFoundError as e:
        # a partial download (one file of the dataset) is enough when it holds the file we read
        partial = getattr(e, "snapshot_path", None)
        if partial:
            return Path(partial)
        raise UserError(
            f"{hub}: no such file, and the Hugging Face Hub dataset {hub.repo}"
            f"{f' at {hub.revision}' if hub.revision else ''} is not in the local cache "
            f"({constants.HF_HUB_CACHE}). instructrl reads Hub data offline, from the cache only: download it "
            f"first (`{hub.download}`), or pass a local file"
        ) from None


def _pick(snapshot: Path, hub: HubDataset, what: str, defaults: Sequence[str]) -> list[Path]:
    if hub.file and (hub.file.startswith("/") or ".." in Path(hub.file).parts):
        raise UserError(f"{hub}: FILE must be a path inside the dataset, such as data/test.parquet")
    patterns = [hub.file] if hub.file else list(defaults)
    for pattern in patterns:
        found = sorted(p for p in snapshot.glob(pattern) if p.is_file())
        if found:
            return found
    data = sorted(p for p in snapshot.rglob("*") if p.is_file() and p.name.endswith(DATA_SUFFIXES))
    listing = ", ".join(str(p.relative_to(snapshot)) for p in data[:10]) + (" ..." if len(data) > 10 else "")
    if hub.file:
        raise UserError(
            f"{hub}: the cached dataset ({snapshot}) has no file {hub.file!r}; its data files: {listing or 'none'}"
        )
    if len(data) == 1:
        return data
    raise UserError(
        f"{hub}: the cached dataset ({snapshot}) holds {len(data) or 'no'} data files ({listing or 'none'}); "
        f"name one with {hub.repo}:FILE (a path or glob in the dataset), for {what}"
    )


# --- Parquet ------------------------------------------------------------------------------------------------
def parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number from 1, row as a dict) of a Parquet file; a `datasets` ClassLabel column (stored as ints)
    is given as its label names, as the dataset's own CSV would spell them."""
    pq = _pyarrow_parquet(path)
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... on a file that is not Parquet
        raise UserError(f"{path}: not a readable Parquet file ({e})") from None
    labels = class_labels(table.schema.metadata)
    for i, row in enumerate(table.to_pylist(), start=1):
        for column, names in labels.items():
            v = row.get(column)
            if isinstance(v, int) and 0 <= v < len(names):
                row[column] = names[v]
        yield i, row


def parquet_columns(path: Path) -> list[str]:
    pq = _pyarrow_parquet(path)
    try:
        return list(pq.read_schema(path).names)
    except Exception as e:
        raise UserError(f"{path}: not a readable Parquet file ({e})") from None


def class_labels(metadata: dict[bytes, bytes] | None) -> dict[str, list[str]]:
    """{column: label names} of the ClassLabel features that `datasets` records in a Parquet schema."""
    try:
        features = json.loads((metadata or {})[b"huggingface"])["info"]["features"]
    except (KeyError, TypeError, ValueError):
        return {}
    return {
        column: list(f["names"])
        for column, f in features.items()
        if isinstance(f, dict) and f.get("_type") == "ClassLabel" and isinstance(f.get("names"), list)
    }


def _pyarrow_parquet(path: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(
            f"{path}: reading Parquet needs pyarrow (pip install 'instructrl[harness]'), or pass the data as "
            "CSV / JSONL"
        ) from None
    return pq
