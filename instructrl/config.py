"""Typed stage configs loaded from YAML with `--set KEY=VALUE` overrides.

Each stage defines one pydantic model (`SFTConfig`, `RMConfig`, `PPOConfig`) whose fields carry their own
docstrings; unknown keys and bad values become a `UserError` naming the file, line and key.
"""

from __future__ import annotations

import argparse
import difflib
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from instructrl.errors import UserError

C = TypeVar("C", bound="StageConfig")

DEFAULT_PROMPT_TEMPLATE = "{prompt}\n"
"""The stages' prompt template, and so a checkpoint's when it saved none (a Hub model, a folder from
elsewhere): the format SFT would train that model in. The newline ends the prompt, so that a plain language
model answers it rather than continuing its last sentence (models.checkpoint)."""


class StageConfig(BaseModel):
    """Keys every stage has. Stage configs subclass this."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)

    seed: int = 0
    """Seed for data order, validation split, dropout and sampling."""
    epochs: int = 1
    """Passes over the training data."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (empty: no cap)."""
    batch_size: int = 32
    """Examples per optimizer step, summed over processes and gradient-accumulation micro-batches."""
    micro_batch_size: int | None = None
    """Examples per forward pass on one process (empty: batch_size / processes, no accumulation)."""
    lr: float = 1e-5
    """Peak learning rate."""
    max_length: int = 512
    """Longest prompt + response in tokens (at most the model's context window)."""
    too_long: Literal["skip", "error"] = "skip"
    """What to do with a prompt that does not fit in max_length: 'skip' (counted in summary.json) or 'error'."""
    val_fraction: float = 0.05
    """Share of the data held out for validation when no --val-data is given (split by user_id when present)."""
    mixed_precision: Literal["auto", "bf16", "fp16", "no"] = "auto"
    """'bf16', 'fp16', 'no', or 'auto' (bf16 where the device does it fast: recent CPUs and GPUs)."""
    checkpoint_every: int = 50
    """Save a resumable checkpoint every this many optimizer steps (and always on Ctrl-C / SIGTERM)."""
    log_every: int = 1
    """Write a metrics.jsonl line every this many optimizer steps."""
    warmup_ratio: float = 0.03
    """Share of the steps spent warming the learning rate up linearly."""
    lr_min_ratio: float = 0.0
    """The cosine schedule decays to lr * lr_min_ratio."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient-norm clipping."""
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    """How a prompt is turned into model input; the response follows it directly. Must contain {prompt}."""
    lora_r: int = Field(default=0, ge=0)
    """LoRA rank (Hu et al. 2021, through peft); 0: off, every weight trains. With LoRA the frozen weights get
    small trainable adapters (and a reward model's scalar head trains fully); final/ is still a plain merged
    Hugging Face checkpoint, with the adapter alone in final/adapter/. In PPO the reference is the policy with
    its adapters switched off, so no second copy of the policy is loaded."""
    lora_alpha: int = Field(default=16, gt=0)
    """LoRA scaling: the adapter's update is multiplied by lora_alpha / lora_r."""
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on the adapters' input (SFT). PPO refuses it: its log-probs and values must be the same function
    of the weights in rollout and in training."""
    lora_target_modules: list[str] | Literal["all-linear"] | None = None
    """Modules that get adapters: a list of module names (e.g. [q_proj, v_proj]), 'all-linear', or empty:
    peft's default for the architecture (GPT-2: c_attn; Llama: q_proj, v_proj), 'all-linear' where peft has none."""
    gradient_checkpointing: bool = False
    """Recompute each layer's activations in the backward pass instead of keeping them (the trained models:
    SFT's, the RM's, PPO's policy and value model): much less activation memory for one more forward
    pass per step; the same losses and gradients. Rollouts still generate with the KV cache."""
    report_to: Literal["none", "tensorboard", "wandb", "all"] = "none"
    """Also send the metrics.jsonl metrics to TensorBoard (into OUT/tensorboard/) or Weights & Biases (into
    OUT/wandb/; WANDB_MODE=offline works) through accelerate's trackers; 'all': both."""

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, v: Any) -> Any:
        return "no" if v is False else v  # YAML 1.1 reads a bare `no` as false

    @field_validator("report_to", mode="before")
    @classmethod
    def _yaml_none(cls, v: Any) -> Any:
        return "none" if v is None or v is False else v  # `--set report_to=` and YAML's `no`

    @field_validator("prompt_template")
    @classmethod
    def _has_prompt(cls, v: str) -> str:
        if "{prompt}" not in v:
            raise ValueError("must contain {prompt}")
        return v

    @classmethod
    def describe(cls) -> str:
        """One line per key with its default and docstring, for `instructrl STAGE --help-config`."""
        lines = []
        for name, field in cls.model_fields.items():
            lines.append(f"{name} (default {field.default!r}): {field.description or ''}")
        return "\n".join(lines)


def read_yaml_mapping(path: str | Path, expected: str) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """A YAML config file that holds a mapping (an empty file is an empty one), and the line of each key at
    every depth (a list item by its index), e.g. {("rm",): 1, ("rm", "lr"): 2}, for error messages."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {e}") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: expected {expected}, got {type(loaded).__name__}")
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node | None, key: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                lines[(*key, k.value)] = k.start_mark.line + 1
                walk(v, (*key, k.value))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                lines[(*key, str(i))] = v.start_mark.line + 1
                walk(v, (*key, str(i)))

    walk(yaml.compose(text), ())
    return loaded, lines


def _unknown_key_error(cls: type[StageConfig], key: str, where: str) -> UserError:
    close = difflib.get_close_matches(key, list(cls.model_fields), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return UserError(
        f"{where}: unknown config key '{key}' for `{cls.__name__}`.{hint} "
        f"Run with --help-config to list the keys."
    )


def parse_override(text: str) -> tuple[str, Any]:
    """'lr=3e-5' -> ('lr', 3e-5). The value is read as YAML, so 'kl_target=' gives None."""
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected KEY=VALUE, for example --set lr=3e-5")
    key, _, raw = text.partition("=")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise UserError(f"--set {text!r}: the value is not valid YAML ({e})") from None
    return key.strip(), value


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None) -> C:
    """Build a stage config from defaults <- YAML file <- --set overrides, validating every key."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if path is not None:
        loaded, lines = read_yaml_mapping(path, "a mapping of config keys")
        for key, value in loaded.items():
            where = f"{path}:{lines[(key,)]}" if (key,) in lines else str(path)
            if key not in cls.model_fields:
                raise _unknown_key_error(cls, str(key), where)
            values[key] = value
            origin[key] = where
    for text in overrides or []:
        key, value = parse_override(text)
        if key not in cls.model_fields:
            raise _unknown_key_error(cls, key, f"--set {text}")
        values[key] = value
        origin[key] = f"--set {text}"
    return build_config(cls, values, origin)


def build_config(cls: type[C], values: dict[str, Any], origin: dict[str, str]) -> C:
    """`cls(**values)`, with each invalid value reported at its origin ('file:line' or '--set ...')."""
    try:
        return cls(**values)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = str(err["loc"][0]) if err["loc"] else ""
            where = origin.get(key, "config")
            problems.append(f"{where}: key '{key}': {err['msg']}" if key else f"{where}: {err['msg']}")
        raise UserError("invalid config:\n  " + "\n  ".join(problems)) from None


def dump_config(config: StageConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def add_config_args(parser, stage_config: type[StageConfig]) -> None:
    """--config / --set / --resume / --help-config, the same for every stage."""
    parser.add_argument("--config", help="YAML file of config keys (see --help-config)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    parser.add_argument(
        "--help-config",
        action=_DescribeConfig,
        stage_config=stage_config,
        help="list every config key with its default and meaning, then exit",
    )


class _DescribeConfig(argparse.Action):
    """Prints a stage config's keys and exits (before required arguments are checked)."""

    def __init__(self, option_strings, dest, stage_config, **kwargs):
        super().__init__(option_strings, dest, nargs=0, **kwargs)
        self.stage_config = stage_config

    def __call__(self, parser, namespace, values, option_string=None):
        print(self.stage_config.describe())
        parser.exit(0)


def config_from_args(cls: type[C], args) -> tuple[C, set[str]]:
    """The stage config from --config/--set, and the keys the user set explicitly."""
    config = load_config(cls, args.config, args.overrides)
    changed = set(config.model_fields_set)
    return config, changed
