"""The configurations of the loop, composed from the stage configs, each from one YAML file: one round's
(`RoundConfig`, `instructrl round`) and the whole pipeline's (`PipelineConfig`, `instructrl pipeline`).

A round's:

    rm:                      # instructrl.reward.config.RMConfig keys
      epochs: 1
      latest_round_weight: 2
    ppo:                     # instructrl.ppo.config.PPOConfig keys
      iterations: 100
      kl_coef: 0.02
    answers: 200             # held-out prompts the new policy and SFT answer, for A/B tasks

`--set rm.lr=3e-6` overrides one key of one stage. The pipeline's: examples/pipeline.yaml.
"""

from __future__ import annotations

import copy
import difflib
import textwrap
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from instructrl.config import StageConfig, _unknown_key_error, build_config, parse_override, read_yaml_mapping
from instructrl.errors import UserError
from instructrl.pipeline.labels import DatabaseLabels, ExportedLabels
from instructrl.ppo.config import PPOConfig
from instructrl.reward.config import RMConfig
from instructrl.sft.config import SFTConfig

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


# --- the pipeline -------------------------------------------------------------------------------------------


class AnswersEval(BaseModel):
    """`instructrl eval answers`: SFT and every round's policy answer held-out prompts, written as A/B pairs
    against SFT, ready for the labeling app's A/B tasks (`instructrl label import ab`)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    prompts: Path
    """Held-out prompts, JSONL (as `eval answers --prompts`)."""
    max_new_tokens: int = Field(default=64, ge=1)
    """Longest answer in tokens."""
    seed: int = 0
    """Sampling seed, the same for every model."""


LABEL_SOURCES = ("exported", "database")


def _label_source(value: Any) -> str:
    """Which `data` section this is: its `source` key, 'exported' when left out (the first source built)."""
    source = value.get("source", "exported") if isinstance(value, dict) else getattr(value, "source", None)
    return str(source)


class SuiteEval(BaseModel):
    """`instructrl eval suite`: the public benchmarks whose data is given, on the base model, SFT and the
    last round's policy, against the base model (the paper's alignment tax is against GPT-3)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    truthfulqa: str | None = None
    """TruthfulQA data (as `eval suite --truthfulqa`)."""
    toxicity: list[str] = []
    """RealToxicityPrompts JSONL files."""
    bias: list[str] = []
    """CrowS-Pairs / Winogender files."""
    tax: list[str] = []
    """Multiple-choice / QA JSONL files for the alignment tax."""
    toxicity_protocol: Literal["gehman", "instructgpt"] = "gehman"
    """As `eval suite --toxicity-protocol`."""
    samples: int = Field(default=25, ge=1)
    """Toxicity, gehman protocol: continuations per prompt."""
    limit: int | None = Field(default=None, ge=1)
    """Toxicity and bias: only the first N rows of each file."""


class EvaluationConfig(BaseModel):
    """What the pipeline measures once the rounds are done; each is one resumable step."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    answers: AnswersEval | None = None
    """A/B pairs of every round's policy against SFT on held-out prompts (empty: none)."""
    suite: SuiteEval | None = None
    """The public benchmarks (empty: none)."""


STAGE_SECTIONS: dict[str, type[StageConfig]] = {"sft": SFTConfig, "rm": RMConfig, "ppo": PPOConfig}


class PipelineConfig(BaseModel):
    """The whole method on a team's own data: SFT -> R rounds of (RM -> PPO / PPO-ptx) -> evaluation -> report,
    round 1 from SFT like `instructrl round --sft`, round N + 1 from round N like `--previous`."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    out: Path
    """The pipeline's directory: one folder per step, the step log and the report (`--out` overrides)."""
    base_model: str
    """The model SFT starts from: a folder written by save_pretrained or a Hub id ORG/NAME[@REVISION]."""
    data: (
        Annotated[
            Annotated[ExportedLabels, Tag("exported")] | Annotated[DatabaseLabels, Tag("database")],
            Discriminator(_label_source),
        ]
        | None
    ) = None
    """Where the human data comes from: `source: exported` (the default), the labeling app's export folders;
    `source: database`, the app's database while its labelers rank each round. (Required in a config file;
    a program passes its own `LabelSource` to `pipeline_steps` instead, as the demo does.)"""
    pretrain: Path | None = None
    """Pretraining text, JSONL ({"text": ...}), for PPO-ptx (needed when ppo.ptx_coef > 0)."""
    sft: SFTConfig = Field(default_factory=SFTConfig)
    """SFT on the demonstrations (`instructrl sft` keys)."""
    rm: RMConfig = Field(default_factory=RMConfig)
    """Every round's reward model (`instructrl rm` keys); normalised on the demonstrations, as the paper."""
    later_rm_epochs: int | None = Field(default=None, ge=1)
    """Epochs of the reward model from round 2 on, where it continues from the last round's RM on every
    round's comparisons (empty: rm.epochs, as in round 1)."""
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    """Every round's PPO (`instructrl ppo` keys); ptx_coef > 0 makes it PPO-ptx."""
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    """What is measured after the last round."""
    changed: dict[str, set[str]] = Field(default_factory=dict, exclude=True)
    """The keys the user set, per stage (a stage reads e.g. its prompt template from the model unless set)."""

    def round_config(self, round_: int) -> RoundConfig:
        """Round `round_`'s config: this pipeline's RM and PPO sections (from round 2 on, the RM's epochs
        `later_rm_epochs` where set)."""
        changed = {k: set(v) for k, v in self.changed.items() if k in STAGES}
        rm = self.rm
        if round_ > 1 and self.later_rm_epochs is not None:
            rm = rm.model_copy(update={"epochs": self.later_rm_epochs})
            changed.setdefault("rm", set()).add("epochs")
        return RoundConfig(rm=rm, ppo=self.ppo, changed=changed)


def describe_pipeline() -> str:
    """`instructrl pipeline --help-config`: every key, a section's keys indented under it."""

    def keys(cls: type[BaseModel], indent: str) -> list[str]:
        lines = []
        for name, field in cls.model_fields.items():
            if name == "changed":
                continue
            default = (
                "" if field.is_required() else f" (default {field.get_default(call_default_factory=False)!r})"
            )
            doc = (field.description or "").replace("\n", " ")
            sub = field.annotation
            if name in STAGE_SECTIONS and cls is PipelineConfig:
                lines += [
                    f"{indent}{name}:  # {doc}",
                    textwrap.indent(STAGE_SECTIONS[name].describe(), indent + "  "),
                ]
                continue
            options = [getattr(t, "__origin__", t) for t in (sub, *getattr(sub, "__args__", ()))]
            nested = [t for t in options if isinstance(t, type) and issubclass(t, BaseModel)]
            if len(nested) > 1:  # one of several kinds of section (data: each label source)
                lines.append(f"{indent}{name}:  # {doc}")
                for kind in nested:
                    lines += [f"{indent}  # or, {kind.__name__}:", *keys(kind, indent + "  ")]
            elif nested:
                lines += [f"{indent}{name}:  # {doc}", *keys(nested[0], indent + "  ")]
            else:
                lines.append(f"{indent}{name}{default}: {doc}")
        return lines

    return "\n".join(keys(PipelineConfig, ""))


def load_pipeline_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Defaults <- YAML file <- `--set SECTION.KEY=VALUE` (or `--set KEY=VALUE` for a top-level key), every
    problem reported at the file and line (or the --set) where the key was written."""
    loaded, lines = read_yaml_mapping(path, "a mapping with 'out', 'base_model', 'data' and stage sections")
    values: dict[str, Any] = copy.deepcopy(loaded)
    origin = {key: f"{path}:{line}" for key, line in lines.items()}
    for text in overrides or []:
        key, value = parse_override(text)
        *sections, last = key.split(".")
        node = values
        for depth, name in enumerate(sections):
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {text}: '{'.'.join(sections[: depth + 1])}' is not a section")
        node[last] = value
        origin[tuple(key.split("."))] = f"--set {text}"
    known = [name for name in PipelineConfig.model_fields if name != "changed"]
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise UserError(
                f"{origin.get((key,), path)}: unknown key '{key}' (a pipeline config has {', '.join(known)}).{hint}"
            )
    if values.get("data") is None:
        raise UserError(
            f"{origin.get(('data',), path)}: no 'data' section: say where the labels come from "
            f"(source: exported, with the export folders, or source: database; see --help-config)"
        )
    stages: dict[str, Any] = {}
    for name, cls in STAGE_SECTIONS.items():
        given = values.pop(name, None) or {}
        if not isinstance(given, dict):
            raise UserError(f"{origin.get((name,), path)}: '{name}' must be a mapping of {cls.__name__} keys")
        where = {str(k): origin.get((name, str(k)), str(path)) for k in given}
        for k in given:
            if k not in cls.model_fields:
                raise _unknown_key_error(cls, str(k), where[str(k)])
        stages[name] = build_config(cls, {str(k): v for k, v in given.items()}, where)
    changed = {name: set(config.model_fields_set) for name, config in stages.items()}
    try:
        config = PipelineConfig(**values, **stages, changed=changed)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = tuple(str(part) for part in err["loc"])
            if loc[:1] == ("data",) and loc[1:2] and loc[1] in LABEL_SOURCES:  # the union's tag: not a key
                loc = loc[:1] + loc[2:]
            at = next((origin[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in origin), str(path))
            problems.append(f"{at}: key '{'.'.join(loc)}': {err['msg']}")
        raise UserError("invalid pipeline config:\n  " + "\n  ".join(problems)) from None
    if config.ppo.ptx_coef > 0 and config.pretrain is None:
        at = origin.get(("ppo", "ptx_coef"), str(path))
        raise UserError(
            f"{at}: ppo.ptx_coef > 0 (PPO-ptx) needs pretraining text: set 'pretrain: FILE.jsonl'"
        )
    return config
