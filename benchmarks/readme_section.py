"""Write a benchmark's tables into benchmarks/README.md, between `<!-- NAME:start -->` and `<!-- NAME:end -->`."""

from __future__ import annotations

from pathlib import Path


def update_readme(path: Path, name: str, text: str) -> None:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    readme = path.read_text()
    if start not in readme or end not in readme:
        raise SystemExit(f"{path}: no {start} ... {end} section to write the tables into")
    head, rest = readme.split(start, 1)
    path.write_text(f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}")
