"""Importers for public data formats: Anthropic HH-RLHF comparisons and Alpaca / Self-Instruct demonstrations."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from instructrl.datasets.io import (
    alpaca_prompt,
    expand_paths,
    iter_json_lines,
    split_hh_dialogue,
    write_jsonl,
)
from instructrl.datasets.records import Comparison, Demonstration
from instructrl.errors import UserError


@dataclass
class ImportReport:
    read: int = 0
    written: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def import_hh_rlhf(paths: list[str | Path], out: str | Path, limit: int | None = None) -> ImportReport:
    """HH-RLHF `{"chosen", "rejected"}` dialogues -> comparisons.jsonl (prompt = dialogue up to the last
    Assistant turn, K = 2, chosen ranked first). Pairs whose dialogues differ before that turn, or whose two
    responses are identical, are skipped and counted."""
    report, records = ImportReport(), list[Comparison]()
    for path in expand_paths(paths):
        for lineno, obj in iter_json_lines(path):
            if limit is not None and len(records) >= limit:
                break
            report.read += 1
            chosen, rejected = obj.get("chosen"), obj.get("rejected")
            if not isinstance(chosen, str) or not isinstance(rejected, str):
                raise UserError(
                    f"{path}:{lineno}: field 'chosen'/'rejected': expected two strings (HH-RLHF format)"
                )
            try:
                prompt, c, r = split_hh_dialogue(chosen, rejected)
            except ValueError:
                report.skip("dialogues differ before the last Assistant turn")
                continue
            if not c or not r:
                report.skip("empty response")
                continue
            if c == r:
                report.skip("identical responses")
                continue
            records.append(Comparison(prompt=prompt, responses=[c, r], ranking=[0, 1]))
    if not records:
        raise UserError(f"{', '.join(map(str, paths))}: no usable HH-RLHF pairs")
    report.written = write_jsonl(out, records)
    return report


def import_alpaca(paths: list[str | Path], out: str | Path, limit: int | None = None) -> ImportReport:
    """Alpaca `{"instruction", "input", "output"}` records, or Self-Instruct seed tasks
    `{"instruction", "instances": [{"input", "output"}]}`, -> demonstrations.jsonl."""
    report, records = ImportReport(), list[Demonstration]()
    for path in expand_paths(paths):
        for lineno, obj in iter_json_lines(path):
            report.read += 1
            instruction = obj.get("instruction")
            if not isinstance(instruction, str) or not instruction.strip():
                raise UserError(f"{path}:{lineno}: field 'instruction': missing or empty (Alpaca format)")
            instances = obj.get("instances")
            if instances is None:
                instances = [{"input": obj.get("input", ""), "output": obj.get("output")}]
            for inst in instances:
                output = inst.get("output")
                if not isinstance(output, str) or not output.strip():
                    report.skip("empty output")
                    continue
                records.append(
                    Demonstration(prompt=alpaca_prompt(instruction, inst.get("input") or ""), response=output)
                )
            if limit is not None and len(records) >= limit:
                break
    if not records:
        raise UserError(f"{', '.join(map(str, paths))}: no usable Alpaca demonstrations")
    report.written = write_jsonl(out, records[:limit] if limit else records)
    return report
