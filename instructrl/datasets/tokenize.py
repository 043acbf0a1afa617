"""Records -> token ids. Prompt and response are tokenized separately and concatenated, so the boundary
(and so the loss mask) is exact, and the ids match what the policy generates after a prompt in PPO.

The one place prompts are formatted: with the tokenizer's chat template when it has one (the prompt is the
conversation rendered with the generation prompt; the response is the assistant's text followed by what the
template ends an assistant turn with), else with the stage's `prompt_template`. SFT, RM, PPO and evaluation
all format through `prompt_ids` / `response_ids`, so each scores exactly the text SFT was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from instructrl.datasets.records import Comparison, Demonstration, Message, as_messages, transcript
from instructrl.datasets.text import user_key
from instructrl.errors import UserError


@dataclass
class Example:
    """One token sequence; loss/score targets are the tokens from `n_prompt` on."""

    input_ids: list[int]
    n_prompt: int


@dataclass
class RankedExample:
    """One prompt's K responses, each as prompt+response ids, and its C(K,2) (better, worse) pairs."""

    sequences: list[list[int]]
    pairs: list[tuple[int, int]]
    n_prompt: int
    """The prompt's length: every sequence starts with the same `n_prompt` ids, which the reward model can
    run once for all K responses."""
    weight: float = 1.0
    """The prompt's weight in the training loss (rmconfig.latest_round_weight)."""

    def __post_init__(self):
        prompt = self.sequences[0][: self.n_prompt]
        assert all(s[: self.n_prompt] == prompt for s in self.sequences), "responses of different prompts"


@dataclass
class TokenizeStats:
    skipped_too_long: int = 0
    truncated: int = 0
    examples: int = 0
    notes: list[str] = field(default_factory=list)


Prompt = str | Sequence[Message]
"""A plain prompt string (one user turn) or a conversation ending with a user turn."""


def _chat(prompt: Prompt, reply: str | None = None) -> list[dict[str, str]]:
    turns = [m.model_dump() for m in as_messages(prompt if isinstance(prompt, str) else list(prompt))]
    return turns if reply is None else [*turns, {"role": "assistant", "content": reply}]


def _apply_template(tokenizer, turns: list[dict[str, str]], add_generation_prompt: bool) -> str:
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(
            turns, add_generation_prompt=add_generation_prompt, tokenize=False
        )
    except TemplateError as e:  # e.g. Gemma's "System role not supported"
        raise UserError(
            f"the tokenizer's chat template refused a conversation ({e}); change the conversation (roles: "
            f"{', '.join(t['role'] for t in turns)}) or the template"
        ) from None


def render_prompt(tokenizer, prompt: Prompt, template: str, chat: bool = True) -> str:
    """The prompt as text, up to where the assistant's reply begins. `chat=False` ignores the chat template
    (raw-text benchmarks, whose prompts are text to continue, not a user's turn)."""
    if chat and tokenizer.chat_template:
        return _apply_template(tokenizer, _chat(prompt), add_generation_prompt=True)
    return template.format(prompt=prompt if isinstance(prompt, str) else transcript(list(prompt)))


def prompt_ids(tokenizer, prompt: Prompt, template: str, chat: bool = True) -> list[int]:
    # a chat template writes its own BOS (HF's apply_chat_template(tokenize=True) adds no special tokens)
    templated = chat and bool(tokenizer.chat_template)
    return tokenizer(
        render_prompt(tokenizer, prompt, template, chat), add_special_tokens=not templated
    ).input_ids


def _reply_text(tokenizer, prompt: Prompt, reply: str) -> str:
    """What the chat template writes for an assistant turn after the generation prompt: the reply and the
    turn's end (e.g. "<|im_end|>\n"), found by diffing two renderings rather than hard-coding tokens."""
    before = render_prompt(tokenizer, prompt, "")
    full = _apply_template(tokenizer, _chat(prompt, reply), add_generation_prompt=False)
    if not full.startswith(before):
        raise UserError(
            "the tokenizer's chat template renders a conversation differently once the assistant has "
            "replied (e.g. it drops reasoning from earlier turns), so a reply's tokens cannot follow the "
            "prompt's; give the tokenizer a template without that, or remove it to use prompt_template"
        )
    return full[len(before) :]


def stop_ids(tokenizer) -> list[int]:
    """Tokens that end a reply: EOS, and with a chat template its end-of-turn token (the first special
    token the template writes after an assistant's text), where generation must stop too."""
    stops = [tokenizer.eos_token_id]
    if tokenizer.chat_template:
        probe = "ok"
        text = _reply_text(tokenizer, "hi", probe)
        suffix = text[text.index(probe) + len(probe) :]
        special = set(tokenizer.added_tokens_decoder) | set(tokenizer.all_special_ids)
        ends = [t for t in tokenizer(suffix, add_special_tokens=False).input_ids if t in special]
        if ends and ends[0] not in stops:
            stops.append(ends[0])
    return stops


def response_ids(tokenizer, response: str, prompt: Prompt, stops: Sequence[int] | None = None) -> list[int]:
    """The reply's ids, ending with a stop token so that the model learns to end its turn. With a chat
    template, what the template writes after the end-of-turn token (Qwen's "\n") is left out: generation
    stops there, and the reward model must score the ids the policy will produce."""
    if not tokenizer.chat_template:
        return tokenizer(response, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    stops = stop_ids(tokenizer) if stops is None else stops
    ids = tokenizer(_reply_text(tokenizer, prompt, response), add_special_tokens=False).input_ids
    end = next((i for i, t in enumerate(ids) if t in stops), None)
    return ids + [tokenizer.eos_token_id] if end is None else ids[: end + 1]


def _prompt_fits(n_prompt: int, max_length: int, too_long: str, what: str, stats: TokenizeStats) -> bool:
    if n_prompt < max_length:
        return True
    if too_long == "error":
        raise UserError(
            f"{what}: prompt is {n_prompt} tokens, longer than max_length={max_length}. "
            f"Shorten it, raise max_length, or --set too_long=skip to skip such prompts"
        )
    stats.skipped_too_long += 1
    return False


def tokenize_demonstrations(
    demos: Sequence[Demonstration], tokenizer, template: str, max_length: int, too_long: str
) -> tuple[list[Example], TokenizeStats]:
    stats, out, stops = TokenizeStats(), [], stop_ids(tokenizer)
    for i, d in enumerate(demos):
        p = prompt_ids(tokenizer, d.conversation, template)
        if not _prompt_fits(len(p), max_length, too_long, d.where(f"demonstration {i + 1}"), stats):
            continue
        r = response_ids(tokenizer, d.response, d.conversation, stops)
        if len(p) + len(r) > max_length:
            stats.truncated += 1
            r = r[: max_length - len(p)]
        out.append(Example(p + r, len(p)))
    stats.examples = len(out)
    return out, stats


def tokenize_texts(texts: Sequence[str], tokenizer, max_length: int) -> list[Example]:
    """Plain documents (pretraining text): every token is a target; long documents are cut into windows."""
    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        for s in range(0, len(ids), max_length):
            chunk = ids[s : s + max_length]
            if len(chunk) > 1:
                out.append(Example(chunk, 0))
    return out


def pack_texts(texts: Sequence[str], tokenizer, block_size: int) -> list[Example]:
    """Documents joined with EOS and cut into full blocks of `block_size` tokens (GPT-style pretraining:
    no padding, attention may cross document boundaries). The last partial block is dropped."""
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    return [
        Example(stream[s : s + block_size], 0) for s in range(0, len(stream) - block_size + 1, block_size)
    ]


def tokenize_comparisons(
    comparisons: Sequence[Comparison],
    tokenizer,
    template: str,
    max_length: int,
    too_long: str,
    weights: Sequence[float] | None = None,
) -> tuple[list[RankedExample], TokenizeStats]:
    stats, out, stops = TokenizeStats(), [], stop_ids(tokenizer)
    for i, c in enumerate(comparisons):
        p = prompt_ids(tokenizer, c.conversation, template)
        if not _prompt_fits(len(p), max_length, too_long, c.where(f"comparison {i + 1}"), stats):
            continue
        seqs = []
        for resp in c.responses:
            r = response_ids(tokenizer, resp, c.conversation, stops)
            if len(p) + len(r) > max_length:
                stats.truncated += 1
                r = r[: max_length - len(p)]
            seqs.append(p + r)
        out.append(RankedExample(seqs, c.pairs(), len(p), 1.0 if weights is None else weights[i]))
    stats.examples = len(out)
    return out, stats


def pad_right(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask  # (B, T), (B, T)


def split_by_user(records: Sequence, fraction: float, seed: int) -> tuple[list, list]:
    """Hold out ~`fraction` of records for validation, whole users at a time (records without a user_id
    count as users of their own), so that no user's prompts are on both sides; ids are compared as the
    intake compares them (`user_key`: 'ann' and 'ann\u3164' are one user)."""
    if not 0 < fraction < 1:
        raise UserError(f"val_fraction={fraction} must be between 0 and 1 when no --val-data is given")
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        uid = getattr(r, "user_id", None)
        groups.setdefault(f"u:{user_key(uid)}" if uid is not None else f"r:{i}", []).append(i)
    keys = sorted(groups)
    order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(seed)).tolist()
    target = max(1, round(fraction * len(records)))
    val_idx: set[int] = set()
    for k in order:
        if len(val_idx) >= target:
            break
        val_idx.update(groups[keys[k]])
    if len(val_idx) == len(records):
        raise UserError(
            f"only {len(records)} records from {len(keys)} users: too few to hold out validation data"
        )
    train = [r for i, r in enumerate(records) if i not in val_idx]
    val = [r for i, r in enumerate(records) if i in val_idx]
    return train, val
