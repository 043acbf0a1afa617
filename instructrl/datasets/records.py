"""The label schema: the contract between data collection (labeling app, importers, demo) and training.

Every JSONL file instructrl reads or writes holds one of these records per line. Readers accept a few
public alternative forms (pairwise chosen/rejected, Anthropic HH dialogues, Alpaca) and normalise them here.
"""

from __future__ import annotations

from itertools import combinations
from typing import Literal

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


class Record(BaseModel):
    # Extra keys (split, labeler ids, timestamps...) are kept, so exports round-trip.
    model_config = ConfigDict(extra="allow")
    _source: str | None = PrivateAttr(default=None)
    """'file:line' the record was read from, for error messages."""

    def where(self, fallback: str) -> str:
        return self._source or fallback


class PromptRecord(Record):
    """A prompt written by a user: `{"prompt": str, "user_id": str, ...}`."""

    prompt: str = Field(min_length=1)
    user_id: str = Field(min_length=1)


class Demonstration(Record):
    """A labeler-written response: `{"prompt": str, "response": str, "user_id": str?}`."""

    prompt: str = Field(min_length=1)
    response: str = Field(min_length=1)
    user_id: str | None = None
    labeler_id: str | None = None
    """Who wrote it (provenance: held-out labelers' work must never reach training)."""


class ResponseLabel(BaseModel):
    """A labeler's judgement of one response inside a ranking task."""

    model_config = ConfigDict(extra="forbid")
    likert: int | None = Field(default=None, ge=1, le=7)
    flags: list[Flag] = []


class Comparison(Record):
    """K responses to one prompt ranked best to worst: `{"prompt", "responses": [..K], "ranking": [..]}`.

    `ranking` lists indices into `responses`, best first, and must be a permutation of 0..K-1.
    """

    prompt: str = Field(min_length=1)
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
    "demonstrations": Demonstration,
    "comparisons": Comparison,
    "pretrain": PretrainText,
    "ab": ABJudgement,
}
