"""Importers for public data formats: Anthropic HH-RLHF comparisons and Alpaca / Self-Instruct demonstrations."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from instructrl.datasets.io import (
    alpaca_prompt,
    expand_paths,
    iter_json_lines,
    split_hh_dialogue,
    write_jsonl,
)
from instructrl.datasets.records import Comparison, Demonstration, Message, Role
from instructrl.errors import UserError


@dataclass
class ImportReport:
    read: int = 0
    written: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


HH_TURN = re.compile(r"\n\n(Human|Assistant):")
HH_ROLES: dict[str, Role] = {"Human": "user", "Assistant": "assistant"}


def hh_messages(dialogue: str) -> list[Message]:
    """An HH-RLHF dialogue ("\n\nHuman: ...\n\nAssistant: ...") as chat turns; ValueError when it does not
    start with a turn marker or a turn is empty."""
    parts = HH_TURN.split(dialogue)  # ['', 'Human', text, 'Assistant', text, ...]
    if parts[0].strip():
        raise ValueError("text before the first Human/Assistant turn")
    return [
        Message(role=HH_ROLES[who], content=text.strip())
        for who, text in zip(parts[1::2], parts[2::2], strict=True)
    ]


def hh_conversation_pair(chosen: str, rejected: str) -> Comparison:
    """A chosen/rejected pair -> a comparison of two replies to one conversation (the turns before the last
    assistant turn). ValueError when the dialogues differ before it or are not alternating turns."""
    c, r = hh_messages(chosen), hh_messages(rejected)
    if not c or not r or c[-1].role != "assistant" or r[-1].role != "assistant":
        raise ValueError("no final Assistant turn")
    if c[:-1] != r[:-1]:
        raise ValueError("chosen and rejected do not share the dialogue before the last Assistant turn")
    pair = {"messages": c[:-1], "responses": [c[-1].content, r[-1].content], "ranking": [0, 1]}
    return Comparison.model_validate(pair)  # its prompt is derived from the messages


def import_hh_rlhf(
    paths: list[str | Path], out: str | Path, limit: int | None = None, records_format: str = "text"
) -> ImportReport:
    """HH-RLHF `{"chosen", "rejected"}` dialogues -> comparisons.jsonl (K = 2, chosen ranked first). The
    prompt is the dialogue up to the last Assistant turn, as text ("text"), or as chat turns ("messages":
    Human -> user, Assistant -> assistant). Pairs whose dialogues differ before that turn, that do not
    alternate turns (messages), or whose two responses are identical, are skipped and counted."""
    if records_format not in ("text", "messages"):
        raise UserError(f"--format {records_format}: expected 'text' or 'messages'")
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
            if records_format == "messages":
                try:
                    pair = hh_conversation_pair(chosen, rejected)
                except ValidationError:
                    report.skip("empty or not alternating Human/Assistant turns")
                    continue
                except ValueError:
                    report.skip("dialogues differ before the last Assistant turn")
                    continue
                if pair.responses[0] == pair.responses[1]:
                    report.skip("identical responses")
                    continue
                records.append(pair)
                continue
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
