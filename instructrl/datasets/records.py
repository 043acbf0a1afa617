"""The label schema: the contract between data collection (labeling app, importers, demo) and training.

Every JSONL file instructrl reads or writes holds one of these records per line. Readers accept a few
public alternative forms (pairwise chosen/rejected, Anthropic HH dialogues, Alpaca) and normalise them here.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

MIN_K, MAX_K = 2, 9
"""Responses per ranked prompt: InstructGPT ranked 4 to 9; 2 is a pairwise comparison."""

# The paper's per-response metadata (Ouyang et al. 2022, Table 3 / Appendix B).
METADATA_FLAGS = (
    "fails_to_follow_instruction",
    "hallucination",
    "inappropriate_for_customer_assistant",
    "sexual_or_violent_content",
    "denigrates_protected_class",
    "harmful_advice",
    "expresses_opinion",
)
Flag = Literal[
    "fails_to_follow_instruction",
    "hallucination",
    "inappropriate_for_customer_assistant",
    "sexual_or_violent_content",
    "denigrates_protected_class",
    "harmful_advice",
    "expresses_opinion",
]


Role = Literal["system", "user", "assistant"]


class Message(BaseModel):
    """One turn of a conversation in the HF/OpenAI chat format: `{"role": ..., "content": ...}`."""

    model_config = ConfigDict(extra="forbid")
    role: Role
    content: str = Field(min_length=1)


def check_conversation(messages: list[Message], last: Role) -> None:
    """A conversation: an optional system turn first, then user and assistant turns alternating from a user
    turn, ending with a `last` turn. Raises ValueError naming the bad turn (messages.i.role)."""
    turns = messages[1:] if messages and messages[0].role == "system" else messages
    offset = len(messages) - len(turns)
    if not turns:
        raise ValueError("field 'messages': needs at least one user turn")
    for i, m in enumerate(turns):
        want = "user" if i % 2 == 0 else "assistant"
        if m.role != want:
            raise ValueError(
                f"field 'messages.{i + offset}.role': is '{m.role}', expected '{want}' (a system turn may "
                f"only come first; then user and assistant turns alternate, starting with the user)"
            )
    if turns[-1].role != last:
        raise ValueError(
            f"field 'messages.{len(messages) - 1}.role': the last turn is '{turns[-1].role}', expected '{last}'"
        )


def transcript(messages: list[Message]) -> str:
    """A conversation as plain text, for tokenizers without a chat template, people and logs. A lone user
    turn is its own content, so `{"messages": [user turn]}` and `{"prompt": ...}` read the same."""
    if len(messages) == 1 and messages[0].role == "user":
        return messages[0].content
    return "\n\n".join(f"{m.role.capitalize()}: {m.content}" for m in messages)


def prompt_text(prompt: str | list[Message]) -> str:
    """A plain prompt, or a conversation's transcript."""
    return prompt if isinstance(prompt, str) else transcript(prompt)


def as_messages(prompt: str | list[Message]) -> list[Message]:
    """A plain prompt string is one user turn."""
    return [Message(role="user", content=prompt)] if isinstance(prompt, str) else prompt


class Record(BaseModel):
    # Extra keys (split, labeler ids, timestamps...) are kept, so exports round-trip.
    model_config = ConfigDict(extra="allow")
    _source: str | None = PrivateAttr(default=None)
    """'file:line' the record was read from, for error messages."""

    def where(self, fallback: str) -> str:
        return self._source or fallback


class Conversational(Record):
    """A record whose prompt is a plain string or a conversation (`messages`, ending with a user turn).

    Given `messages`, `prompt` is derived from them (their `transcript`), so code that shows or logs
    prompts keeps working; the tokenizer's chat template, when it has one, renders `messages` instead.
    """

    prompt: str = Field(min_length=1)
    messages: list[Message] | None = None

    @model_validator(mode="before")
    @classmethod
    def _prompt_from_messages(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("messages") is not None:
            # `prompt` is derived: the JSONL written by instructrl holds both, and messages win on reading
            data = {**data, "prompt": "(from messages)"}
        return data

    @model_validator(mode="after")
    def _check_messages(self) -> Conversational:
        if self.messages is not None:
            check_conversation(self.messages, "user")
            self.prompt = transcript(self.messages)
        return self

    @property
    def conversation(self) -> str | list[Message]:
        """What the tokenizer formats: the messages, or the plain prompt string."""
        return self.prompt if self.messages is None else self.messages


class PromptRecord(Conversational):
    """A prompt written by a user: `{"prompt": str, "user_id": str, ...}`, or `{"messages": [...], ...}`
    with the conversation so far, ending with a user turn."""

    user_id: str = Field(min_length=1)


class EvalPrompt(Conversational):
    """A prompt to answer in an evaluation (`eval answers`): PromptRecord's layout with `user_id` optional,
    since only the prompt splits, which group prompts by user, need it."""

    user_id: str | None = None


class Demonstration(Conversational):
    """A labeler-written response: `{"prompt": str, "response": str, "user_id": str?}`, or
    `{"messages": [..., {"role": "assistant", ...}]}` whose last (assistant) turn is the response."""

    response: str = Field(min_length=1)
    user_id: str | None = None
    labeler_id: str | None = None
    """Who wrote it (provenance: held-out labelers' work must never reach training)."""

    @model_validator(mode="before")
    @classmethod
    def _response_from_last_turn(cls, data: Any) -> Any:
        messages = data.get("messages") if isinstance(data, dict) else None
        if isinstance(messages, list) and "response" not in data and messages:
            last = messages[-1].model_dump() if isinstance(messages[-1], Message) else messages[-1]
            if not (isinstance(last, dict) and last.get("role") == "assistant"):
                role = last.get("role") if isinstance(last, dict) else last
                raise ValueError(
                    f"field 'messages.{len(messages) - 1}.role': the last turn is '{role}'; a demonstration's "
                    f"last turn is the assistant's response (or give it as 'response')"
                )
            data = {**data, "messages": messages[:-1], "response": last.get("content")}
        return data


class ResponseLabel(BaseModel):
    """A labeler's judgement of one response inside a ranking task."""

    model_config = ConfigDict(extra="forbid")
    likert: int | None = Field(default=None, ge=1, le=7)
    flags: list[Flag] = []


class Comparison(Conversational):
    """K responses to one prompt ranked best to worst: `{"prompt", "responses": [..K], "ranking": [..]}`;
    the prompt may be a conversation ending with a user turn: `{"messages": [...], "responses", "ranking"}`.

    `ranking` lists indices into `responses`, best first, and must be a permutation of 0..K-1.
    """

    responses: list[str]
    ranking: list[int]
    user_id: str | None = None
    labels: list[ResponseLabel] | None = None
    labeler_id: str | None = None
    """Who ranked it."""
    model: str | None = None
    """The policy that sampled all the responses, when one did (e.g. an SFT or PPO checkpoint)."""
    models: list[str] | None = None
    """The policy that sampled each response, in `responses` order, when known (a labeling round may mix
    the current policy's answers with the previous one's)."""
    round: int | None = Field(default=None, ge=1)
    """The round of ChatGPT's loop the ranking belongs to, as the labeling app exports it (empty: 1, the
    only round, e.g. an export from before rounds)."""

    @field_validator("responses")
    @classmethod
    def _k_in_range(cls, responses: list[str]) -> list[str]:
        if not MIN_K <= len(responses) <= MAX_K:
            raise ValueError(f"needs {MIN_K} to {MAX_K} responses, got {len(responses)}")
        return responses

    @model_validator(mode="after")
    def _ranking_is_permutation(self) -> Comparison:
        k = len(self.responses)
        if sorted(self.ranking) != list(range(k)):
            raise ValueError(
                f"field 'ranking': {self.ranking} is not a permutation of 0..{k - 1} "
                f"(list every response index once, best first)"
            )
        if self.labels is not None and len(self.labels) != k:
            raise ValueError(f"field 'labels': has {len(self.labels)} entries for {k} responses")
        if self.models is not None and len(self.models) != k:
            raise ValueError(f"field 'models': has {len(self.models)} entries for {k} responses")
        return self

    @property
    def k(self) -> int:
        return len(self.responses)

    def pairs(self) -> list[tuple[int, int]]:
        """All C(K, 2) (better, worse) response-index pairs implied by the ranking."""
        return [(self.ranking[i], self.ranking[j]) for i, j in combinations(range(self.k), 2)]


class PretrainText(Record):
    """A document of pretraining text for PPO-ptx and the alignment-tax evaluation: `{"text": str}`."""

    text: str = Field(min_length=1)


class ABPair(BaseModel):
    """Two models' responses to one prompt, to be judged side by side: what `instructrl eval answers --baseline`
    writes, one a line, and the labeling app's A/B upload takes (its `ABUploadItem` is this record). A judged
    pair comes back from the app's export as an `ABJudgement`."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1)
    """The prompt as text (a conversation's transcript): the labeling app finds its imported prompt by it."""
    model_a: str = Field(min_length=1)
    """The name of the model that wrote `response_a` (`eval answers`: the model compared)."""
    response_a: str
    model_b: str = Field(min_length=1)
    """The name of the model that wrote `response_b` (`eval answers`: the baseline)."""
    response_b: str


class ABJudgement(Record):
    """One A/B evaluation: which of two responses (from named models) a labeler preferred."""

    prompt: str
    response_a: str
    response_b: str
    model_a: str
    model_b: str
    preferred: Literal["a", "b", "tie"]
    labeler_id: str | None = None
    labeler_group: str | None = None
    """'heldout' for held-out labelers, whose judgements are the ones to report."""


KINDS: dict[str, type[Record]] = {
    "prompts": PromptRecord,
    "eval_prompts": EvalPrompt,
    "demonstrations": Demonstration,
    "comparisons": Comparison,
    "pretrain": PretrainText,
    "ab": ABJudgement,
}
