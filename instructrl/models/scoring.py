"""Forward passes shared by every stage: the reward `score()`, per-token values and response log-probs.

All of them take (B, T) token ids with an attention mask and work the same for left or right padding,
because positions come from the mask, never from the pad id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from instructrl.models.cache import cache_argument, cache_rows
from instructrl.models.lora import hf_model


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last attended token of each row, for left- or right-padded batches."""
    T = attention_mask.shape[1]
    return T - 1 - attention_mask.long().flip(-1).argmax(-1)  # (B,)


def _module(model: nn.Module, name: str) -> nn.Module:
    """A submodule by attribute name, typed (nn.Module.__getattr__ is typed as Tensor | Module)."""
    sub = getattr(model, name)
    assert isinstance(sub, nn.Module), name
    return sub


def backbone(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Final hidden states of a *ForSequenceClassification model's transformer (after its last norm)."""
    out = _module(model, "base_model")(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
    )
    return out.last_hidden_state  # (B, T, H)


def reward_offset(model: nn.Module) -> float:
    """Bias kept in the config for architectures whose final norm has no bias to fold it into."""
    return float(getattr(model.config, "reward_bias", 0.0) or 0.0)


@dataclass
class SharedPrompts:
    """Prompts that several rows continue (a prompt's K responses), run through the transformer once."""

    input_ids: torch.Tensor  # (P, Tp) left-padded prompt ids
    attention_mask: torch.Tensor  # (P, Tp)
    of_row: torch.Tensor  # (N,) index of the prompt each row continues

    def to(self, device: torch.device) -> SharedPrompts:
        return SharedPrompts(
            self.input_ids.to(device), self.attention_mask.to(device), self.of_row.to(device)
        )


RESPONSE_GROUPS = 4
"""Rows after shared prompts run in up to this many passes of similar lengths (shortest first), each as wide as
its own longest row rather than the batch's: on the demo's RM batches (192 responses of 2-32 tokens) a third
of the padded tokens."""


def last_hidden_after_prompts(
    model: nn.Module, prompts: SharedPrompts, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Final hidden state at the last token of each right-padded row that continues `prompts`. (N, H)

    Each prompt runs once; its keys and values, repeated for its rows, are the cache the rows run on. That is
    exact for a causal transformer: a prompt's keys and values do not depend on what follows it. Gradients
    reach the prompt pass through the repeat (an index, which autograd follows). The rows then run in groups
    of similar length (RESPONSE_GROUPS), so that short rows are not padded to the longest one.
    """
    base = _module(model, "base_model")
    rows = prompts.of_row
    full_mask = torch.cat([prompts.attention_mask[rows], attention_mask], dim=1)  # (N, Tp + R)
    cache_name = cache_argument(base)
    checkpointing = base.training and getattr(base, "is_activation_checkpointing", False)
    if cache_name is None or checkpointing or not attention_mask.any(-1).all():
        # The plain path, on [prompt, response] rows: the transformer takes no KV cache (transformers also
        # turns the cache off while training with gradient checkpointing), or a response is empty (its
        # reward is read on the prompt's last token, which the response pass does not return).
        ids = torch.cat([prompts.input_ids[rows], input_ids], dim=1)  # (N, Tp + R)
        hidden = backbone(model, ids, full_mask)  # (N, Tp + R, H)
        return hidden[torch.arange(len(ids), device=ids.device), last_token_index(full_mask)]
    prompt_out = base(
        input_ids=prompts.input_ids,
        attention_mask=prompts.attention_mask,
        position_ids=position_ids_from_mask(prompts.attention_mask),
        use_cache=True,
    )
    cache = getattr(prompt_out, cache_name)  # each layer's keys and values: (P, heads, Tp, head_dim)
    lengths = attention_mask.sum(-1)  # (N,)
    order = torch.argsort(lengths, stable=True)  # (N,) shortest first
    groups = order.tensor_split(min(RESPONSE_GROUPS, len(order))) if hasattr(cache, "layers") else [order]
    Tp, last = prompts.input_ids.shape[1], []
    for group in groups:
        width = int(lengths[group].max())
        mask = full_mask[group, : Tp + width]  # (n, Tp + width)
        out = base(
            input_ids=input_ids[group, :width],
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask)[:, Tp:],  # (n, width)
            use_cache=True,
            **{cache_name: cache_rows(cache, rows[group], copy=len(groups) > 1)},
        )
        last.append(out.last_hidden_state[torch.arange(len(group), device=group.device), lengths[group] - 1])
    return torch.cat(last)[torch.argsort(order)]  # (N, H) back in the rows' order


class ScalarHead(nn.Module):
    """A Hugging Face *ForSequenceClassification model (one label) read as r(x, y) on the last token, or
    as V(s_t) on every token. Wrapping it in a module keeps DDP's gradient sync when training through it;
    so the prompts shared by several rows run inside its forward too."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        per_token: bool = False,
        prompts: SharedPrompts | None = None,
    ) -> torch.Tensor:
        model = hf_model(self.model)  # with LoRA: the classifier inside the peft model, adapters in place
        if prompts is not None:
            assert not per_token, "values of rows that continue shared prompts are not needed anywhere"
            hidden = last_hidden_after_prompts(model, prompts, input_ids, attention_mask)  # (B, H)
        else:
            hidden = backbone(model, input_ids, attention_mask)  # (B, T, H)
            if not per_token:
                last = last_token_index(attention_mask)  # (B,)
                hidden = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, H)
        # The scalar head runs in fp32 even under bf16 autocast: in bf16 (8 bits of mantissa) close rewards
        # round to the same value and rankings tie.
        head = _module(model, "score")
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            r = head(hidden.float()).squeeze(-1)
        return r + reward_offset(model)  # (B,) or (B, T)


def _as_head(model: nn.Module) -> nn.Module:
    return ScalarHead(model) if hasattr(model, "base_model") and hasattr(model, "score") else model


def score(reward_model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """r(x, y): the reward model's scalar on the last token of each prompt+response sequence. (B,)

    The one reward function of instructrl: RM training, PPO and evaluation all call it. `reward_model` is a
    Hugging Face sequence classifier or a ScalarHead (DDP-wrapped or not).
    """
    return _as_head(reward_model)(input_ids, attention_mask)


def score_shared_prompts(
    reward_model: nn.Module, prompts: SharedPrompts, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """r(x, y) for right-padded responses y (N, R) that continue `prompts` x, each prompt run once for all
    its responses: what `score` gives on the concatenated prompt+response rows, for a fraction of the cost
    when the prompts are long. (N,)"""
    return _as_head(reward_model)(input_ids, attention_mask, prompts=prompts)


def values(value_model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """V(s_t) for every position: the scalar head applied to every hidden state. (B, T)"""
    return _as_head(value_model)(input_ids, attention_mask, per_token=True)


def _probe(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed 4-token input (ids, mask), each (1, 4): enough to see which module feeds the head."""
    embeddings: Any = model.get_input_embeddings()  # type: ignore[operator]
    ids = torch.arange(4, device=embeddings.weight.device).remainder(embeddings.num_embeddings)[None]
    return ids, torch.ones_like(ids)


@torch.no_grad()
def _probe_scores(model: nn.Module) -> torch.Tensor:
    """r of the probe input in fp32, whatever autocast is on outside. (1,)"""
    ids, mask = _probe(model)
    with torch.autocast(device_type=ids.device.type, enabled=False):
        return score(model, ids, mask)


@torch.no_grad()
def _output_module(model: nn.Module) -> nn.Module | None:
    """The module with a (H,) bias whose output is the backbone's output (GPT-2's ln_f, OPT's
    decoder.final_layer_norm), found by running the model once: OPT registers it before its layers and names
    each layer's own norm `final_layer_norm` too, so neither names nor order identify it."""
    base = _module(model, "base_model")
    hidden_size = _module(model, "score").in_features
    outputs: list[tuple[nn.Module, torch.Tensor]] = []

    def keep(module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            outputs.append((module, output))

    hooks = [
        m.register_forward_hook(keep)
        for m in base.modules()
        if isinstance(getattr(m, "bias", None), torch.Tensor) and m.bias.shape == (hidden_size,)
    ]
    try:
        hidden = backbone(model, *_probe(model))  # (1, 4, H)
    finally:
        for h in hooks:
            h.remove()
    for module, out in reversed(outputs):
        if out.shape == hidden.shape and torch.equal(out, hidden):
            return module
    return None


@torch.no_grad()
def add_reward_bias(reward_model: nn.Module, bias: float) -> str:
    """Shift every reward by `bias`, so that a plain Hugging Face load of the saved RM sees the shift too.

    When the backbone's output comes from a module with a bias (GPT-2, GPT-NeoX, OPT, Phi, Bloom: the final
    LayerNorm), adding d = bias * w / |w|^2 to that bias shifts w.h by exactly `bias`; a probe forward checks
    it. Otherwise (RMSNorm has no bias: Llama, Qwen2, Mistral, Gemma) the bias goes to `config.reward_bias`,
    which `score()` adds. Returns where it went, for the run's instructrl.json.
    """
    module = _output_module(reward_model)
    weight = _module(reward_model, "score").weight
    assert isinstance(weight, torch.Tensor)
    w = weight[0].float()  # (H,)
    if module is not None and w.norm() > 0:
        module_bias = module.bias
        assert isinstance(module_bias, torch.Tensor)
        kept = module_bias.clone()
        before = _probe_scores(reward_model)
        module_bias.add_((bias * w / w.dot(w)).to(module_bias.dtype))
        shift = (_probe_scores(reward_model) - before).item()
        if abs(shift - bias) <= 1e-4 * max(1.0, abs(bias), before.abs().item()):
            return "final_norm_bias"
        module_bias.copy_(kept)  # the module's output is read by more than the head: keep the bias apart
    config: Any = reward_model.config
    config.reward_bias = reward_offset(reward_model) + bias
    return "config.reward_bias"


def scale_reward(reward_model: nn.Module, gain: float, bias: float) -> None:
    """Make the model's score gain · r + bias: the head's weight times gain, the config's offset moved to
    gain · offset + bias (a bias folded into the final norm is scaled with the weight that reads it)."""
    model = hf_model(reward_model.model if isinstance(reward_model, ScalarHead) else reward_model)
    weight = _module(model, "score").weight  # with LoRA: the head's trained copy (peft's modules_to_save)
    assert isinstance(weight, torch.Tensor)
    with torch.no_grad():
        weight.mul_(gain)
    config: Any = model.config
    config.reward_bias = gain * reward_offset(model) + bias


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[labels], in fp32.

    One fused log_softmax (and one fused backward) rather than gather - logsumexp: logsumexp is composite
    (max, sub, exp, sum, log) and its forward + backward over an 8k vocabulary took 3.7x as long on CPU.
    Backward keeps the (B, T, V) log-softmax where logsumexp kept its fp32 input: the same memory, except
    with fp32 logits, where that input was the logits tensor itself.
    """
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # (B, T)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    return -(logp.exp() * logp).sum(-1)  # (B, T)


def response_logits(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_len: int
) -> torch.Tensor:
    """Logits that predict the last `response_len` tokens of each row (the unembedding runs on those only)."""
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        logits_to_keep=response_len + 1,
        use_cache=False,
    )
    return out.logits[:, :-1]  # (B, R, V)


def response_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_len: int,
    temperature: float = 1.0,
) -> torch.Tensor:
    """log π(y_t | x, y_<t) for the last `response_len` tokens of each row."""
    logits = response_logits(model, input_ids, attention_mask, response_len) / temperature
    return token_logprobs(logits, input_ids[:, -response_len:])  # (B, R)
