"""The configuration of one round of the loop: the stage configs it runs, composed, from one YAML file.

    rm:                      # instructrl.reward.config.RMConfig keys
      epochs: 1
      latest_round_weight: 2
    ppo:                     # instructrl.ppo.config.PPOConfig keys
      iterations: 100
      kl_coef: 0.02
    answers: 200             # held-out prompts the new policy and SFT answer, for A/B tasks

`--set rm.lr=3e-6` overrides one key of one stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from instructrl.config import StageConfig, _unknown_key_error, build_config, parse_override, read_yaml_mapping
from instructrl.errors import UserError
from instructrl.ppo.config import PPOConfig
from instructrl.reward.config import RMConfig

STAGES: dict[str, type[StageConfig]] = {"rm": RMConfig, "ppo": PPOConfig}


class RoundConfig(BaseModel):
    """One round of ChatGPT's loop: the reward model retrained on every round's rankings, PPO continued."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    rm: RMConfig = Field(default_factory=RMConfig)
    """The reward model's training (continued from the previous round's RM from round 2 on)."""
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    """PPO (continued from the previous round's policy from round 2 on; the KL is always to SFT)."""
    answers: int = Field(default=0, ge=0)
    """Held-out prompts (--eval-prompts) that the new policy and SFT answer into eval/answers.jsonl, for A/B
    tasks in the labeling app (`instructrl label import ab`); 0: none."""
    changed: dict[str, set[str]] = Field(default_factory=dict, exclude=True)
    """The keys the user set, per stage (a stage reads e.g. its prompt template from the model unless set)."""


def describe() -> str:
    """`instructrl round --help-config`: every stage's keys under its section."""
    sections = [f"{name}:  # {cls.__name__}\n" + cls.describe() for name, cls in STAGES.items()]
    answer = "answers: 0\n    " + (RoundConfig.model_fields["answers"].description or "")
    return "\n\n".join([*sections, answer])


def load_round_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RoundConfig:
    """Defaults <- YAML file <- `--set STAGE.KEY=VALUE`, every key validated where it was written."""
    values: dict[str, dict[str, Any]] = {name: {} for name in STAGES}
    origin: dict[str, dict[str, str]] = {name: {} for name in STAGES}
    top: dict[str, Any] = {}
    if path is not None:
        loaded, lines = read_yaml_mapping(path, "a mapping with 'rm', 'ppo' and 'answers' keys")
        for key, value in loaded.items():
            where = f"{path}:{lines.get((str(key),), '?')}"
            if key in STAGES:
                if not isinstance(value, dict):
                    raise UserError(f"{where}: '{key}' must be a mapping of {STAGES[key].__name__} keys")
                for k, v in value.items():
                    values[key][str(k)] = v
                    origin[key][str(k)] = f"{path}:{lines.get((key, str(k)), '?')}"
            elif key == "answers":
                top[key] = value
            else:
                raise UserError(
                    f"{where}: unknown key '{key}' (a round config has 'rm', 'ppo' and 'answers')"
                )
    for text in overrides or []:
        key, value = parse_override(text)
        stage, _, k = key.partition(".")
        if stage == "answers" and not k:
            top["answers"] = value
            continue
        if stage not in STAGES or not k:
            raise UserError(f"--set {text}: expected rm.KEY=VALUE, ppo.KEY=VALUE or answers=N")
        values[stage][k] = value
        origin[stage][k] = f"--set {text}"
    stages: dict[str, Any] = {}
    for name, cls in STAGES.items():
        for k, where in origin[name].items():
            if k not in cls.model_fields:
                raise _unknown_key_error(cls, k, where)
        stages[name] = build_config(cls, values[name], origin[name])
    try:
        return RoundConfig(**stages, **top, changed={name: set(values[name]) for name in STAGES})
    except ValueError as e:
        raise UserError(f"invalid round config: {e}") from None
