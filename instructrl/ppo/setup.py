"""PPO's set-up (`setup_ppo`): the policy and value model to train, the frozen SFT reference and reward model,
the prompts, the optimizer and the KL controller, held in one `PPOSetup` that every phase reads.

The reward's normalisation (`RewardNorm`, measured by `rollout.normalise_reward`) is a gain and bias that give
the SFT policy's own samples a mean score of 0 and a standard deviation of 1, so that β, the value clip and the
missing-EOS penalty have a known scale (lm-human-preferences, Ziegler et al. 2019; "The N+ implementation
details of RLHF with PPO", Huang et al. 2024).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from instructrl.datasets.io import read_pretrain, read_prompts
from instructrl.datasets.tokenize import Example, prompt_ids, split_by_user, stop_ids, tokenize_texts
from instructrl.errors import UserError
from instructrl.models.checkpoint import CheckpointMeta
from instructrl.models.loading import load_causal_lm, load_reward_model, load_tokenizer
from instructrl.models.memory import frozen_dtype, resolve_device, to_frozen_dtype
from instructrl.models.scoring import ScalarHead
from instructrl.ppo.config import PPOConfig
from instructrl.ppo.core import AdaptiveKLController, FixedKLController
from instructrl.training.runtime import attention_implementation
from instructrl.training.sharding import gathered, is_sharded
from instructrl.training.stage import StageRun

RewardFn = Callable[[list[str], list[str]], list[float]]
"""(prompts, responses) -> one score per response: a reward given as a Python function."""


@dataclass
class RewardNorm:
    """score = gain · r(x, y) + bias, with gain and bias chosen so that the SFT policy's samples on training
    prompts score mean 0 and standard deviation 1 (gain 1, bias 0: no normalisation)."""

    gain: float = 1.0
    bias: float = 0.0
    samples: int = 0
    """How many SFT samples the mean and standard deviation were measured on."""
    raw_mean: float | None = None
    raw_std: float | None = None

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        return raw * self.gain + self.bias


@dataclass
class Prompts:
    queries: list[list[int]]  # token ids, prompt template applied
    texts: list[str]


@dataclass
class PPOSetup:
    """Everything one PPO run holds, built once by `setup_ppo`; the iteration reads it, never module globals."""

    # the stage's skeleton: the config, the accelerator, the run directory (run.dir), final/, summary.json
    run: StageRun[PPOConfig]
    tokenizer: Any
    stops: list[int]  # token ids that end a response: EOS and the chat template's end-of-turn token
    policy: torch.nn.Module  # π_θ, prepared for training (DDP-wrapped or, with sharding=fsdp, FSDP2-sharded)
    # π_SFT, frozen; None with LoRA, where it is the policy with its adapters off (`reference`)
    ref_policy: torch.nn.Module | None
    value_model: torch.nn.Module  # V_φ, starts as the reward model (or value_dir's); prepared for training
    value_apart: bool
    """The value model starts from a model of its own (`value_dir`), not the reward model: its head is
    normalised by its own scores (`normalise_reward`)."""
    reward_model: torch.nn.Module | None  # r_ψ, frozen; None when reward_fn scores instead
    reward_fn: RewardFn | None
    judge_fn: RewardFn | None
    """Scores the held-out answers for the checkpoint choice (KeepBest) instead of the reward model."""
    reward_norm: RewardNorm
    value_norm: RewardNorm
    """The gain and bias given to the value model's head: the reward's, or its own when `value_apart`."""
    # one AdamW, a parameter group for the policy and one for the value model (their shards, when sharded)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    kl_ctl: FixedKLController | AdaptiveKLController
    train: Prompts
    val: Prompts
    ptx_train: list[Example]  # pretraining sequences for PPO-ptx
    ptx_val: list[Example]  # held-out pretraining sequences: the alignment tax, before and after
    skipped_too_long: int
    iterations: int
    meta: CheckpointMeta  # what final/, kept/ and value/ note in their instructrl.json

    @property
    def config(self) -> PPOConfig:
        return self.run.config

    @property
    def accelerator(self) -> Accelerator:
        return self.run.accelerator

    @property
    def unwrapped_policy(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.policy)

    @property
    def sharded(self) -> bool:
        return is_sharded(self.policy)

    def whole(self) -> contextlib.AbstractContextManager[None]:
        """Sharded policy and value model gathered whole for the `with`'s rollouts and scoring: generation stops
        when a process's own rows have ended, so its forward passes could not run in lockstep with the other
        processes'. A no-op when unsharded. Every process enters it together."""
        return gathered(self.policy, self.value_model)

    @contextlib.contextmanager
    def reference(self) -> Iterator[torch.nn.Module]:
        """π_SFT for the duration of a `with`: its own frozen copy, or with LoRA the policy itself with its
        adapters switched off (the frozen weights are the SFT model's: one copy in memory, not two)."""
        if self.ref_policy is not None:
            yield self.ref_policy
            return
        policy: Any = self.unwrapped_policy
        with policy.disable_adapter():
            yield policy

    @property
    def ptx_batch(self) -> int:
        return self.config.ptx_batch_size or self.config.batch_size

    @property
    def steps_per_iteration(self) -> int:
        return self.config.epochs * self.config.minibatches


# ---------------------------------------------------------------------------------------------------------
# set-up
# ---------------------------------------------------------------------------------------------------------
def setup_ppo(
    *,
    policy_dir: str | Path,
    reward_dir: str | Path,
    prompts: Any,
    out: str | Path,
    config: PPOConfig,
    reference_dir: str | Path | None = None,
    val_prompts: Any = None,
    pretrain_data: Any = None,
    resume: bool = False,
    changed_keys: set[str] | None = None,
    reward_fn: RewardFn | None = None,
    accelerator: Accelerator | None = None,
    judge_fn: RewardFn | None = None,
    value_dir: str | Path | None = None,
) -> PPOSetup:
    """Validate the inputs, load the four models and the data, build the optimizer. Writes nothing but
    OUT/config.yaml, and only once every input was read.

    `reference_dir`: the frozen model the KL is measured to, when the policy does not start from it — PPO
    continued from an earlier round's policy keeps the SFT model as its reference (ChatGPT's loop). Default:
    the policy's own start, `policy_dir`.
    `value_dir`: the reward model the value model starts from (default: `reward_dir`, as the paper's); e.g. a
    smaller one than the reward model PPO optimises, whose update then costs less."""
    changed_keys = changed_keys or set()
    policy_meta = CheckpointMeta.find(policy_dir)
    if "prompt_template" not in changed_keys and policy_meta is not None:
        config.prompt_template = policy_meta.prompt_template
    if config.ptx_coef > 0 and pretrain_data is None:
        raise UserError("ptx_coef > 0 (PPO-ptx) needs --pretrain-data text.jsonl")
    run = StageRun(out, config, resume=resume, changed_keys=changed_keys, accelerator=accelerator)
    config, accelerator = run.config, run.accelerator
    reward_device = resolve_device(config.reward_device, "reward_device")
    world = accelerator.num_processes

    # --- data: prompts, held-out prompts, pretraining text --------------------------------------------------
    reference_dir = policy_dir if reference_dir is None else reference_dir
    tokenizer = load_tokenizer(policy_dir)
    config.max_length = run.max_length(policy_dir)
    check_same_tokenizer(tokenizer, load_tokenizer(reward_dir), reward_dir)
    value_dir = reward_dir if value_dir is None else value_dir
    value_apart = str(value_dir) != str(reward_dir)
    if value_apart:
        check_same_tokenizer(tokenizer, load_tokenizer(value_dir), value_dir, "value")
    if reference_dir != policy_dir:
        check_same_tokenizer(tokenizer, load_tokenizer(reference_dir), reference_dir, "reference")
    train_records, val_records = run.train_val(read_prompts, prompts, val_prompts)
    train, skipped = load_prompt_queries(train_records, tokenizer, config, "training")
    val, val_skipped = load_prompt_queries(val_records[: config.eval_prompts], tokenizer, config, "held-out")
    if len(train.queries) < config.rollout_batch_size:
        raise UserError(
            f"{len(train.queries)} usable prompts are fewer than rollout_batch_size={config.rollout_batch_size}; "
            f"lower it (--set rollout_batch_size=N) or add prompts"
        )
    if config.rollout_batch_size % world or config.batch_size % world:
        raise UserError(f"rollout_batch_size and batch_size must be multiples of the {world} processes")
    ptx_train: list[Example] = []
    ptx_val: list[Example] = []
    if pretrain_data is not None:
        docs = read_pretrain(pretrain_data)
        train_docs, val_docs = split_by_user(docs, config.val_fraction, config.seed)
        window = min(config.max_length, 1024)
        ptx_train = tokenize_texts([d.text for d in train_docs], tokenizer, window)
        ptx_val = tokenize_texts([d.text for d in val_docs], tokenizer, window)[:256]

    # --- models: policy and value are trained; the SFT reference and the reward model are frozen ---------------
    # The frozen ones are never given to accelerator.prepare (no optimizer state, no gradients, no DDP wrapper);
    # they may be held in bf16/fp16 (frozen_dtype), and the RM on a device of its own (reward_device).
    attention = attention_implementation(accelerator)
    frozen = frozen_dtype(config.frozen_dtype, accelerator.mixed_precision)
    policy: torch.nn.Module = load_causal_lm(policy_dir, dropout=False, attn_implementation=attention)
    policy = run.adapt(policy, "CAUSAL_LM")
    ref_policy: torch.nn.Module | None = None
    # with LoRA the reference is the policy's own frozen weights (`PPOSetup.reference`), unless the policy
    # starts from a later round's policy, not from the reference: then the reference is loaded, as without LoRA
    if not config.lora_r or str(reference_dir) != str(policy_dir):
        ref_policy = load_causal_lm(reference_dir, dropout=False, attn_implementation=attention)
        ref_policy = to_frozen_dtype(ref_policy, frozen).eval().requires_grad_(False).to(accelerator.device)
    reward_model: torch.nn.Module | None = None
    if reward_fn is None:
        reward_model = load_reward_model(reward_dir, attn_implementation=attention)
        reward_model = to_frozen_dtype(reward_model, frozen).eval().requires_grad_(False)
        reward_model = reward_model.to(reward_device or accelerator.device)
    # V_φ starts as the RM (or value_dir's). With LoRA it is the RM's own copy with adapters and a fully trained
    # head: sharing the frozen RM's weights would share its config too, where the value head's gain and offset
    # live (scale_reward)
    value_rm: torch.nn.Module = load_reward_model(value_dir, attn_implementation=attention)
    value_model: torch.nn.Module = ScalarHead(run.adapt(value_rm, "SEQ_CLS"))

    iterations = config.iterations
    steps_per_iteration = config.epochs * config.minibatches
    if config.max_steps is not None:
        iterations = min(iterations, max(1, config.max_steps // steps_per_iteration))
    # One optimizer for both models: under fp16 loss scaling, accelerate unscales every optimizer in each
    # clip_grad_norm_ and resets its record at each step, so a second optimizer's gradients were unscaled twice.
    # sharding=fsdp: each trained model sharded on its own (its blocks, then its root) and the optimizer over
    # their shards, each model's a group of its own. The frozen reference and RM stay whole on every process:
    # they have no gradients or optimizer state to split, and each process scores its own episodes, with no
    # forward passes in lockstep (frozen_dtype halves them). bf16 is autocast's, as unsharded: FSDP2's bf16
    # weights (norms and embeddings too) put the SFT policy 4.5e-4 nats per episode from its own reference.
    trained, optimizer, scheduler = run.prepare(
        {"policy": policy, "value": value_model},
        iterations * steps_per_iteration,
        lrs={"policy": config.lr, "value": config.value_lr or config.lr},
        autocast=True,
    )
    policy, value_model = trained["policy"], trained["value"]

    kl_ctl: FixedKLController | AdaptiveKLController
    if config.kl_target is None:
        kl_ctl = FixedKLController(config.kl_coef)
    else:
        kl_ctl = AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)

    run.start()
    rm_meta = CheckpointMeta.read(reward_dir) if reward_fn is None else CheckpointMeta()
    meta = CheckpointMeta(
        stage="ppo",
        prompt_template=config.prompt_template,
        sft_model=str(reference_dir),
        reward_model=str(reward_dir),
        ptx_coef=config.ptx_coef,
        lora_r=config.lora_r,
        round=rm_meta.round,
        # which models this policy descends from, round by round (ChatGPT's loop continues from the last)
        lineage=[
            *(policy_meta.lineage if policy_meta else []),
            {
                "stage": "ppo",
                "round": rm_meta.round,
                "policy_init": str(policy_dir),
                "reference": str(reference_dir),
                "reward_model": str(reward_dir),
                "value_model": str(value_dir),
            },
        ],
    )
    return PPOSetup(
        run=run,
        tokenizer=tokenizer,
        stops=stop_ids(tokenizer),
        policy=policy,
        ref_policy=ref_policy,
        value_model=value_model,
        value_apart=value_apart,
        reward_model=reward_model,
        reward_fn=reward_fn,
        judge_fn=judge_fn,
        reward_norm=RewardNorm(),
        value_norm=RewardNorm(),
        optimizer=optimizer,
        scheduler=scheduler,
        kl_ctl=kl_ctl,
        train=train,
        val=val,
        ptx_train=ptx_train,
        ptx_val=ptx_val,
        skipped_too_long=skipped + val_skipped,
        iterations=iterations,
        meta=meta,
    )


def load_prompt_queries(records, tokenizer, config: PPOConfig, what: str) -> tuple[Prompts, int]:
    """Tokenized prompts that leave room for max_new_tokens; too-long ones are skipped or rejected."""
    queries, texts, skipped = [], [], 0
    limit = config.max_length - config.max_new_tokens
    for i, rec in enumerate(records):
        q = prompt_ids(tokenizer, rec.conversation, config.prompt_template)
        if len(q) > limit:
            if config.too_long == "error":
                raise UserError(
                    f"{rec.where(f'{what} prompt {i + 1}')}: prompt is {len(q)} tokens; with max_new_tokens={config.max_new_tokens} it "
                    f"does not fit max_length={config.max_length}. Shorten it or --set too_long=skip"
                )
            skipped += 1
            continue
        queries.append(q)
        texts.append(rec.prompt)
    return Prompts(queries, texts), skipped


def check_same_tokenizer(policy_tok, other_tok, other_dir, what: str = "reward") -> None:
    if policy_tok.get_vocab() != other_tok.get_vocab():
        raise UserError(
            f"{other_dir}: the {what} model's tokenizer differs from the policy's; instructrl scores the "
            f"policy's token ids directly, so use models that descend from the same SFT model"
        )
