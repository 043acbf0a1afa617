"""Loading Hugging Face checkpoints (any causal LM directory) with clear errors for the user's mistakes."""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, TypeVar

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from instructrl.errors import UserError
from instructrl.models.threads import share_cores

# Attribute names under which architectures keep the dropout applied to each residual branch.
RESIDUAL_DROPOUT_KEYS = (
    "resid_pdrop",
    "hidden_dropout",
    "hidden_dropout_prob",
    "residual_dropout",
    "dropout",
)


def quiet_transformers() -> None:
    """Drop transformers' per-load progress bars and reports; instructrl prints its own progress."""
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    # accelerate warns at every checkpoint that tied embeddings are stored once, which is what we want
    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter.*")


# A Hugging Face Hub model id: NAME or ORG/NAME, then optionally @REVISION (a branch, tag or commit).
HUB_ID = re.compile(r"^(?:[\w.-]+/)?[\w.-]+(?:@[\w./-]+)?$")


class HubKwargs(TypedDict, total=False):
    """What `from_pretrained` gets besides the name: typed per key, so that a type checker matches each key
    with its parameter (a `dict[str, str]` unpacked with ** would be checked against every parameter)."""

    revision: str


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: a local directory, or a Hub id that transformers resolves itself (from its
    cache under HF_HOME or HF_HUB_CACHE; with HF_HUB_OFFLINE=1 from the cache only)."""

    name: str  # what from_pretrained gets: the directory or ORG/NAME
    revision: str | None = None  # Hub ids only: the branch, tag or commit written after '@'
    is_dir: bool = True

    def kwargs(self) -> HubKwargs:
        return HubKwargs(revision=self.revision) if self.revision else HubKwargs()

    def __str__(self) -> str:
        return self.name + (f"@{self.revision}" if self.revision else "")


def resolve_model(spec: str | Path | ModelSource, what: str = "model") -> ModelSource:
    """A --model, --policy or --reward value: a directory written by save_pretrained, or ORG/NAME[@REVISION].

    A directory wins over a Hub id spelled the same. A Hub id is checked by fetching its config.json (from
    the cache when offline), so a missing or unreachable model fails here, before any work starts.
    """
    if isinstance(spec, ModelSource):
        return spec
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(
                f"{path}: not a Hugging Face {what} directory (no config.json). "
                f"Pass a directory written by save_pretrained, e.g. RUN_DIR/final, or a Hub id ORG/NAME"
            )
        return ModelSource(str(path))
    if path.exists() or text.startswith((".", "/", "~")) or not HUB_ID.match(text):
        raise UserError(
            f"{text}: {what} directory does not exist. Pass a directory written by save_pretrained "
            f"(e.g. RUN_DIR/final) or a Hugging Face Hub id ORG/NAME, optionally ORG/NAME@REVISION"
        )
    repo, _, revision = text.partition("@")
    source = ModelSource(repo, revision or None, is_dir=False)
    try:
        transformers.utils.cached_file(repo, "config.json", **source.kwargs())
    except OSError as e:
        raise UserError(_hub_error(what, source, e)) from None
    return source


def _hub_error(what: str, source: ModelSource, e: OSError) -> str:
    import huggingface_hub

    download = f"hf download {source.name}" + (f" --revision {source.revision}" if source.revision else "")
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return (
            f"{source}: no such {what} directory, and the Hugging Face Hub model {source} is not in the "
            f"cache ({huggingface_hub.constants.HF_HUB_CACHE}) while HF_HUB_OFFLINE is set. Download it "
            f"into that cache first (`{download}`), or pass a directory written by save_pretrained"
        )
    return (
        f"{source}: no such {what} directory, and the Hugging Face Hub did not give {source}: "
        f"{str(e).splitlines()[0]} Check the id (ORG/NAME) and revision, log in for a gated model "
        f"(`hf auth login`), or pass a directory written by save_pretrained"
    )


def load_tokenizer(path: str | Path | ModelSource) -> transformers.PreTrainedTokenizerBase:
    source = resolve_model(path)
    tok = AutoTokenizer.from_pretrained(source.name, **source.kwargs())
    if tok.eos_token_id is None:
        raise UserError(f"{source}: the tokenizer has no eos_token; set one so responses can end")
    if tok.pad_token_id is None:
        # instructrl never infers positions from the pad id (it uses attention masks), so EOS can stand in.
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def set_residual_dropout(config: transformers.PretrainedConfig, p: float) -> str | None:
    """Set the residual-branch dropout (InstructGPT SFT used 0.2); returns the key set, None if none exists."""
    for key in RESIDUAL_DROPOUT_KEYS:
        if hasattr(config, key) and isinstance(getattr(config, key), int | float):
            setattr(config, key, p)
            return key
    return None


def disable_dropout(config: transformers.PretrainedConfig) -> None:
    """RL and reward modelling run without dropout: log-probs and values must be the same function of the
    weights in rollout and in training (as in TRL and OpenRLHF).

    Every rate an architecture keeps in its config goes to 0, whatever it is called (GPT-2 `attn_pdrop`,
    GPT-Neo `embed_dropout`, OPT `activation_dropout` and `layerdrop`, MPT `attn_config.attn_pdrop`, ...);
    `zero_dropout_modules` then catches any nn.Dropout built from elsewhere.
    """
    for key, value in list(vars(config).items()):
        if isinstance(value, transformers.PretrainedConfig):
            disable_dropout(value)
        elif isinstance(value, dict) and any(_is_dropout_key(k) for k in value):
            setattr(
                config,
                key,
                {k: type(v)(0) if _is_dropout_key(k) and _is_rate(v) else v for k, v in value.items()},
            )
        elif _is_dropout_key(key) and _is_rate(value):
            setattr(config, key, type(value)(0))  # 0 of the declared type: strict configs check it


def _is_dropout_key(key: object) -> bool:
    return isinstance(key, str) and ("dropout" in key or key.endswith("pdrop") or key == "layerdrop")


def _is_rate(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


M = TypeVar("M", bound=torch.nn.Module)


def zero_dropout_modules(model: M) -> M:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def load_causal_lm(
    path: str | Path | ModelSource,
    residual_dropout: float | None = None,
    dropout: bool = True,
    attn_implementation: str | None = None,
) -> transformers.PreTrainedModel:
    source = resolve_model(path)
    quiet_transformers()
    config = transformers.AutoConfig.from_pretrained(source.name, **source.kwargs())
    if not dropout:
        disable_dropout(config)
    if (
        residual_dropout is not None
        and set_residual_dropout(config, residual_dropout) is None
        and residual_dropout > 0
    ):
        warnings.warn(
            f"{config.model_type} has no residual dropout setting; residual_dropout ignored", stacklevel=2
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source.name,
            config=config,
            dtype=torch.float32,
            attn_implementation=attn_implementation,
            **source.kwargs(),
        )
    except (OSError, ValueError) as e:
        raise UserError(f"{source}: could not load a causal language model: {e}") from None
    return share_cores(model if dropout else zero_dropout_modules(model))


def load_reward_model(
    path: str | Path | ModelSource, dropout: bool = False, attn_implementation: str | None = None
) -> transformers.PreTrainedModel:
    """A causal LM or reward-model directory as a one-output sequence classifier.

    From an SFT checkpoint this drops the unembedding and adds a fresh scalar head, as InstructGPT's RM did.
    """
    source = resolve_model(path, "reward model")
    quiet_transformers()
    config = transformers.AutoConfig.from_pretrained(source.name, num_labels=1, **source.kwargs())
    if not dropout:
        disable_dropout(config)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source.name,
            config=config,
            dtype=torch.float32,
            attn_implementation=attn_implementation,
            **source.kwargs(),
        )
    except (OSError, ValueError) as e:
        raise UserError(f"{source}: could not load as a reward model: {e}") from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = (
            model.config.eos_token_id if isinstance(model.config.eos_token_id, int) else 0
        )
    return share_cores(model if dropout else zero_dropout_modules(model))


def context_window(path: str | Path | ModelSource) -> int | None:
    """The longest sequence the model at `path` takes, from its config alone."""
    source = resolve_model(path)
    config = transformers.AutoConfig.from_pretrained(source.name, **source.kwargs())
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    return None
