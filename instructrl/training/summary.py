"""OUT/summary.json, the one file a finished stage leaves for the stages and reports after it: a typed model
per stage (sft/summary.py, reward/summary.py, ppo/summary.py) on the base here, written by `StageRun.finish`,
read by `read`. Only pydantic here, so that readers need not import torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_serializer

from instructrl.errors import UserError

SUMMARY_FILE = "summary.json"  # RunDir.write_summary writes it
M = TypeVar("M", bound=BaseModel)


def read_model(cls: type[M], file: Path) -> M:
    """A `cls` from the JSON file `file`, or a UserError that names the file and what in it is amiss."""
    try:
        return cls.model_validate_json(file.read_text(encoding="utf-8"))
    except ValidationError as e:
        problems = "; ".join(f"'{'.'.join(map(str, err['loc']))}': {err['msg']}" for err in e.errors())
        raise UserError(f"{file}: does not hold a {cls.__name__}: {problems}") from None


def read_model_in(cls: type[M], path: str | Path, name: str, missing: str) -> M:
    """A `cls` from `path`: a directory holding the file `name`, or the file itself. `missing`: the error
    when there is none, with {file} and {path} filled in."""
    file = Path(path)
    file = file / name if file.is_dir() else file
    if not file.is_file():
        raise UserError(missing.format(file=file, path=path))
    return read_model(cls, file)


class StageSummary(BaseModel):
    """What a stage reports of its run. Each stage's summary adds its results; the facts of how it ran,
    below, come last in the file. Keys this version does not know (written by another one) are kept, not refused.
    """

    model_config = ConfigDict(frozen=True, extra="allow", use_attribute_docstrings=True)

    stage: str
    """What ran: pretrain, sft, rm, ppo or ppo-ptx."""
    mixed_precision: str
    """The precision the run resolved: 'no', 'bf16' or 'fp16'."""
    processes: int
    sharding: Literal["none", "fsdp"]
    """'fsdp' when the trained model was sharded over the processes, else 'none'."""
    process_state_bytes: dict[str, Any]
    """What the main process held of the trained model and its optimizer (`local_state_bytes`)."""
    time_s: float
    """Wall-clock seconds of the whole stage."""

    @model_serializer(mode="wrap")
    def _how_it_ran_last(self, handler: Any) -> dict[str, Any]:
        fields = handler(self)
        return {
            **{k: v for k, v in fields.items() if k not in RUN_FACTS},
            **{k: fields[k] for k in RUN_FACTS},
        }

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def read(cls, path: str | Path) -> Self:
        """A finished run's summary; `path` is its run directory or its summary.json."""
        missing = "{file}: no such file; the run has not finished (continue it with --resume)"
        return read_model_in(cls, path, SUMMARY_FILE, missing)


RUN_FACTS = tuple(k for k in StageSummary.model_fields if k != "stage")
