"""The demo's sizes (`DemoSettings`) and the stage configs they make (`pretrain_config`, `sft_config`,
`rm_config`, `ppo_config`): what the demo's steps (pipeline.py) and its shipped base model (base.py) read."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from instructrl.demo.world import UserConfig
from instructrl.ppo.config import PPOConfig
from instructrl.reward.config import RMConfig
from instructrl.sft.config import SFTConfig

TEMPLATE = "<|endoftext|>{prompt}"
"""The demo's prompt format: a prompt starts a new document (the corpus separates documents with EOS), and
the response follows it directly (the word-level tokenizer keeps no newlines)."""


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo. `full()` is the 19.5-minute run (2 AVX2 cores), `quick()` the 76-second one the tests use."""

    seed: int = 0
    users: UserConfig = field(default_factory=UserConfig)
    corpus_docs: int = 20_000
    """Pretraining documents."""
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    context: int = 256
    """Context window of the model (a few-shot prompt is the longest input)."""
    block_size: int = 128
    """Pretraining sequence length (documents packed)."""
    pretrain_epochs: int = 6
    pretrain_lr: float = 2e-3
    pretrain_batch: int = 32
    n_demonstrations: int = 1200
    """Fewer demonstrations than comparison prompts, as in the paper (13k vs 33k)."""
    sft_epochs: int = 4
    sft_lr: float = 5e-4
    n_comparison_prompts: int = 3000
    rankings_per_prompt: int = 1
    """Ranking tasks per training comparison prompt, each on fresh samples (more comparisons than the
    world's users have distinct prompts)."""
    k_range: tuple[int, int] = (4, 9)
    overlap: float = 0.1
    """Share of ranking tasks done by two training labelers (for their agreement)."""
    rm_epochs: int = 4
    """The 0.9M-parameter RM underfits in 1-2 epochs (train accuracy 0.62 on seed 0); the epoch with the
    lowest validation loss is kept, so more epochs cannot overfit it."""
    rm_lr: float = 3e-4
    ppo_iterations: int = 60
    ppo_rollout: int = 64
    ppo_batch: int = 16
    ppo_lr: float = 3e-5
    kl_coef: float = 0.3
    """β on the normalised reward (SFT samples: mean 0, std 1)."""
    ref_temperature: float | None = None
    """PPO's KL to SFT at this reference temperature (PPOConfig.ref_temperature; empty: SFT as sampled)."""
    ppo_keep_by: Literal["reward_model", "labelers"] = "reward_model"
    """What chooses PPO's kept checkpoint among its evaluations on validation prompts: the mean score of the
    RM being optimised, or the training labelers' comparisons with the starting policy's answers
    (pipeline.labelers_judge). Never the held-out labelers or the gold standard."""
    ptx_coef: float = 0.3
    max_new_tokens: int = 32
    best_of: int = 4
    """N of the best-of-N row of the evaluation (the best of N SFT samples by the reward model)."""
    rounds: int = 2
    """Rounds of ChatGPT's loop: 1 is InstructGPT's single pass; each further round ranks the current PPO
    policy's samples, continues the RM and continues PPO (plain PPO; PPO-ptx stays a round-1 comparison)."""
    round_comparison_prompts: int = 3000
    """Training prompts ranked in each later round (sampled afresh: some were ranked in earlier rounds)."""
    round_rm_epochs: int = 2
    """Epochs of the continued RM over every round's comparisons."""
    n_eval_prompts: int = 400
    probe_unanswerable: int = 96
    """Questions about things the world does not contain (probes.py: the truthfulness probe)."""
    probe_closed_domain: int = 150
    """Held-out users' summarization, closed-QA and extraction prompts (fewer if the test split has fewer)
    for the closed-domain hallucination rate."""
    probe_rudeness: int = 80
    """Rudeness-inviting beginnings, each answered with and without the instruction to be polite."""
    probe_rudeness_samples: int = 2
    """Samples per beginning and condition (for the expected maximum: any of them rude)."""
    n_train_labelers: int = 10
    n_heldout_labelers: int = 5
    mixed_precision: Literal["auto", "bf16", "fp16", "no"] = "auto"
    shipped_base: bool = True
    """Use the base model shipped for this seed (demo/base.py) when the run's world, corpus and pretraining
    config are those it was trained on; False (`--pretrain`) pretrains from scratch."""

    @classmethod
    def full(cls, seed: int = 0) -> DemoSettings:
        return cls(seed=seed)

    @classmethod
    def quick(cls, seed: int = 0) -> DemoSettings:
        return cls(
            seed=seed,
            users=UserConfig(n_users=400, n_heavy_users=2, heavy_prompts=(220, 300)),
            corpus_docs=6000,
            n_layer=2,
            n_embd=96,
            pretrain_epochs=3,
            n_demonstrations=400,
            sft_epochs=3,
            n_comparison_prompts=400,
            rm_epochs=1,
            round_comparison_prompts=400,
            round_rm_epochs=1,
            ppo_iterations=6,
            ppo_rollout=32,
            ppo_batch=16,
            n_eval_prompts=100,
            probe_unanswerable=12,
            probe_closed_domain=12,
            probe_rudeness=8,
            n_train_labelers=6,
            n_heldout_labelers=3,
        )

    def as_json(self) -> dict[str, Any]:
        """The settings as settings.json holds them (tuples as lists)."""
        return json.loads(json.dumps(asdict(self)))


def pretrain_config(s: DemoSettings) -> SFTConfig:
    """The config of the base model's pretraining (`run_pretrain`), as the shipped bases were trained with."""
    return SFTConfig(
        seed=s.seed,
        epochs=s.pretrain_epochs,
        batch_size=s.pretrain_batch,
        lr=s.pretrain_lr,
        residual_dropout=0.0,
        warmup_ratio=0.02,
        weight_decay=0.01,
        mixed_precision=s.mixed_precision,
        checkpoint_every=200,
    )


def sft_config(s: DemoSettings) -> SFTConfig:
    """SFT on the training labelers' demonstrations, in the demo's prompt format."""
    return SFTConfig(
        seed=s.seed,
        epochs=s.sft_epochs,
        batch_size=32,
        lr=s.sft_lr,
        residual_dropout=0.1,
        mixed_precision=s.mixed_precision,
        max_length=s.context,
        prompt_template=TEMPLATE,
    )


def rm_config(s: DemoSettings, epochs: int) -> RMConfig:
    """The reward model: `s.rm_epochs` in round 1, `s.round_rm_epochs` when a later round continues it."""
    return RMConfig(
        seed=s.seed,
        epochs=epochs,
        batch_size=32,
        lr=s.rm_lr,
        mixed_precision=s.mixed_precision,
        max_length=s.context,
    )


def ppo_config(s: DemoSettings, ptx: bool) -> PPOConfig:
    """PPO (`ptx`: PPO-ptx, with pretraining gradients) against the reward model, the KL to SFT."""
    return PPOConfig(
        seed=s.seed,
        iterations=s.ppo_iterations,
        rollout_batch_size=s.ppo_rollout,
        batch_size=s.ppo_batch,
        lr=s.ppo_lr,
        kl_coef=s.kl_coef,
        ref_temperature=s.ref_temperature,
        lam=1.0,
        max_new_tokens=s.max_new_tokens,
        max_length=s.context,
        mixed_precision=s.mixed_precision,
        eval_prompts=128,
        ptx_coef=s.ptx_coef if ptx else 0.0,
        checkpoint_every=20,
    )


PRESETS = {"full": DemoSettings.full, "quick": DemoSettings.quick}
SHIPPED_CONFIG = Path(__file__).with_name("demo.yaml")
"""The full demo's settings written out (`instructrl demo --config` a copy of it, edited)."""


def load_demo_settings(path: str | Path) -> DemoSettings:
    """`instructrl demo --config FILE`: `preset: full | quick` (default full), then any DemoSettings key over
    it (`users:` a mapping of UserConfig keys); every problem named at its file and line, exit 2."""
    import difflib
    from dataclasses import fields

    from pydantic import TypeAdapter, ValidationError

    from instructrl.config import read_yaml_mapping
    from instructrl.errors import UserError

    loaded, lines = read_yaml_mapping(
        path, "a mapping of the demo's settings (preset, then DemoSettings keys)"
    )

    def at(*key: str) -> str:
        line = next((lines[key[:n]] for n in range(len(key), 0, -1) if key[:n] in lines), None)
        return f"{path}:{line}" if line else str(path)

    preset = loaded.pop("preset", "full")
    if preset not in PRESETS:
        raise UserError(f"{at('preset')}: preset {preset!r}: one of {', '.join(PRESETS)}")
    base = asdict(PRESETS[preset]())
    for section, known in (((), [f.name for f in fields(DemoSettings)]), (("users",), list(base["users"]))):
        given = loaded if not section else loaded.get("users")
        if not isinstance(given, dict):
            if given is not None:
                raise UserError(
                    f"{at('users')}: 'users' must be a mapping of UserConfig keys ({', '.join(known)})"
                )
            continue
        for key in given:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise UserError(
                    f"{at(*section, str(key))}: unknown key '{'.'.join([*section, str(key)])}'.{hint}"
                )
    values = {**base, **loaded, "users": {**base["users"], **(loaded.get("users") or {})}}
    try:
        return TypeAdapter(DemoSettings).validate_python(values, strict=False)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = tuple(str(part) for part in err["loc"])
            problems.append(f"{at(*loc)}: key '{'.'.join(loc)}': {err['msg']}")
        raise UserError("invalid demo config:\n  " + "\n  ".join(problems)) from None
