"""instructrl.json: what a stage notes beside the checkpoint it saves (which stage, the prompt template it
trained with, where the model came from), written and read here alone.

Every consumer (the evaluations, the labeling app's generation, the stages that continue a checkpoint) reads
it through `CheckpointMeta.read`, so a checkpoint is prompted the same way everywhere; a model with no notes
(a Hub model, a folder from elsewhere) gets the defaults, DEFAULT_PROMPT_TEMPLATE among them. `find` tells
such a model apart: a stage starting from one keeps the template its config gives.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from instructrl.config import DEFAULT_PROMPT_TEMPLATE
from instructrl.datasets.io import atomic_write_text
from instructrl.errors import UserError, where

if TYPE_CHECKING:
    from instructrl.models.loading import ModelSource

META_FILE = "instructrl.json"


class CheckpointMeta(BaseModel):
    """The notes in instructrl.json. A file holds the keys its stage set; keys this version does not know
    (written by another one) are kept, not refused."""

    model_config = ConfigDict(frozen=True, extra="allow", use_attribute_docstrings=True)

    stage: str | None = None
    """What saved the model: pretrain, sft, rm, ppo or ppo-value; None for a model from elsewhere."""
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    """How the model was trained to read a prompt (a tokenizer's chat template, if any, comes first)."""
    base_model: str | None = None
    """SFT, pretraining: the model they started from."""
    sft_model: str | None = None
    """RM, PPO: the SFT model they descend from (PPO: its KL reference)."""
    reward_model: str | None = None
    """PPO: the reward model the policy was trained against."""
    round: int | None = None
    """RM, PPO: the latest data-collection round of the comparisons."""
    lora_r: int = 0
    """LoRA rank of the training (the saved weights are merged either way)."""
    ptx_coef: float | None = None
    """PPO: the pretraining-loss coefficient (PPO-ptx when above 0)."""
    iteration: int | None = None
    """PPO: the iteration the saved policy is from (keep-best may keep an earlier one than the last)."""
    reward_bias: float | None = None
    """RM: the bias added after training so that the reference responses score 0 on average."""
    reward_bias_stored_in: str | None = None
    """RM: where that bias is in the weights (a head bias, or config.reward_bias)."""
    reward_bias_reference: str | None = None
    """RM: the responses the bias centres."""
    lineage: list[dict[str, Any]] = []
    """RM, PPO: the models this one continues, round by round, oldest first."""

    @field_validator("prompt_template")
    @classmethod
    def _has_prompt(cls, v: str) -> str:
        if "{prompt}" not in v:
            raise ValueError("must contain {prompt}")
        return v

    # -- the one writer -------------------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        """What the file holds: the keys that were set (as before this type), unknown ones included."""
        return self.model_dump(mode="json", exclude_unset=True)

    def write(self, folder: str | Path) -> Path:
        """FOLDER/instructrl.json, written atomically."""
        path = Path(folder) / META_FILE
        atomic_write_text(path, json.dumps(self.as_dict(), indent=2))
        return path

    # -- the one reader -------------------------------------------------------------------------------------
    @classmethod
    def read(cls, model: str | Path | ModelSource) -> CheckpointMeta:
        """The notes of a model directory or Hub id; the defaults for a model without them."""
        return cls.find(model) or cls()

    @classmethod
    def find(cls, model: str | Path | ModelSource) -> CheckpointMeta | None:
        """The notes of a model directory or Hub id; None when it has none (instructrl did not save it)."""
        path = _meta_file(model)
        if path is None:
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{where(path, e.lineno)}: not JSON ({e.msg}). {_FIX}") from None
        except UnicodeDecodeError:
            raise UserError(f"{path}: not UTF-8 text. {_FIX}") from None
        return cls.parse(data, path)

    @classmethod
    def parse(cls, data: Any, source: str | Path) -> CheckpointMeta:
        """Notes as JSON gives them; `source` names where they come from in the error of malformed ones."""
        if not isinstance(data, dict):
            raise UserError(
                f"{source}: checkpoint notes must be a JSON object, not {type(data).__name__}. {_FIX}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            problems = "; ".join(
                f"field '{'.'.join(map(str, err['loc']))}': {err['msg']}" for err in e.errors()
            )
            raise UserError(f"{source}: malformed checkpoint notes: {problems}. {_FIX}") from None


_FIX = (
    f"{META_FILE} holds the notes instructrl saves beside a checkpoint: fix it, or delete it to use the "
    f"defaults (prompt template {DEFAULT_PROMPT_TEMPLATE!r})"
)


def _meta_file(model: str | Path | ModelSource) -> Path | None:
    """Where `model`'s instructrl.json is (a Hub model's from the cache, or downloaded); None if it has none."""
    import transformers

    from instructrl.models.loading import resolve_model

    source = resolve_model(model)
    if source.is_dir:
        path = Path(source.name) / META_FILE
        return path if path.is_file() else None
    found = transformers.utils.cached_file(
        source.name,
        META_FILE,
        **source.kwargs(),
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )
    return Path(found) if found is not None else None
