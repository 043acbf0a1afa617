"""Request and response bodies, one set per entity (`...Create` in, `...Public` out)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from instructrl.datasets.records import ABPair, Message, PromptRecord, ResponseLabel
from instructrl.prompts.intake import DroppedPrompt, IntakeReport

Role = Literal["admin", "labeler"]
Group = Literal["default", "heldout"]
"""`models.GROUPS`: 'heldout' labelers' work is kept for evaluation only."""
TaskKind = Literal["demonstration", "ranking", "ab"]


class ORMModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# What PostgreSQL cannot store is refused for both databases, so both give the same answer (issue 13):
# text with NUL characters, and names longer than their String(255) columns.
MAX_NAME = 255
"""User ids and model names: String(255) columns."""
NUL_MESSAGE = "contains a NUL character (\\x00), which cannot be stored; remove it"


def valid_text(text: str) -> str:
    """Text a client sent, as every schema takes it (`Text`): refused when it holds a NUL, or a lone
    surrogate (`"\\ud800"` in JSON), which is not a Unicode character: no UTF-8 encoder writes it, so it
    failed every page, the export and PostgreSQL after being stored (issue 23)."""
    if text.isascii():  # the common case, at C speed
        if "\x00" in text:
            raise ValueError(NUL_MESSAGE)
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"contains U+{ord(text[e.start]):04X} at character {e.start + 1}, a lone surrogate, which is not "
            f"Unicode text; write the character itself, or both halves of its \\u escape pair"
        ) from None
    if "\x00" in text:
        raise ValueError(NUL_MESSAGE)
    return text


def _checked(value: object) -> object:
    # before pydantic's own str checks, which refuse some lone surrogates with a message naming no character
    return valid_text(value) if isinstance(value, str) else value


Text = Annotated[str, BeforeValidator(_checked)]
"""Every text field a client sends (JSON bodies, forms, upload lines): Unicode without NUL characters."""


class TextKeys(BaseModel):
    """A body or upload line whose field names are checked like its text (`valid_text`): pydantic can name
    neither a field nor its problem when the name is a lone surrogate."""

    @model_validator(mode="before")
    @classmethod
    def _names_are_text(cls, data: object) -> object:
        for key in data if isinstance(data, dict) else ():
            if isinstance(key, str):
                try:
                    valid_text(key)
                except ValueError as e:
                    raise ValueError(f"a field's name {e}") from None
        return data


# --- users -------------------------------------------------------------------------------------------


class UserCreate(TextKeys):
    name: Text = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    password: Text = Field(min_length=1, max_length=1024)
    """Checked against the deployment's password policy (`Settings.password`) when the user is created."""
    role: Role
    group: Group = "default"


class UserPublic(ORMModel):
    id: int
    name: str
    role: Role
    group: Group
    disabled: bool


class PasswordIn(TextKeys):
    """A new password, set by an admin (checked against the deployment's password policy)."""

    model_config = ConfigDict(extra="forbid")
    password: Text = Field(min_length=1, max_length=1024)


class SessionsEnded(BaseModel):
    sessions_ended: int


class LoginIn(TextKeys):
    # Not `Text`: a name or password no account can have (a NUL, a lone surrogate) is a failed login (401),
    # counted towards the lockouts like any other (services.users.authenticate)
    name: str
    password: str


class LoginPublic(BaseModel):
    user: UserPublic
    csrf_token: str
    """Send it back as the X-CSRF-Token header on every POST."""


# --- prompts -----------------------------------------------------------------------------------------


MAX_PROMPT = 100_000
"""Characters in one prompt. It also bounds the personal-information scan of a prompt: a regular expression
holds the GIL while it runs, so one 20 MB prompt would stall every request for seconds (~1.5 s per MB)."""


class MessageIn(Message):
    """A turn of an uploaded conversation."""

    content: Text = Field(min_length=1)


class PromptUpload(PromptRecord, TextKeys):
    """A line of a prompt upload (NUL characters are refused for every field as the file is read)."""

    prompt: Text = Field(min_length=1, max_length=MAX_PROMPT)
    user_id: Text = Field(min_length=1, max_length=MAX_NAME)
    # MessageIn is a Message; mypy holds list invariant where pydantic only validates
    messages: list[MessageIn] | None = None  # type: ignore[assignment]

    @model_validator(mode="after")
    def _conversation_fits(self) -> PromptUpload:
        # a conversation's `prompt` is derived after the field's own bound was checked
        if len(self.prompt) > MAX_PROMPT:
            raise ValueError(f"field 'messages': the conversation is longer than {MAX_PROMPT} characters")
        return self


class PromptPublic(ORMModel):
    id: int
    text: str
    user_id: str
    split: str
    pii: list[str]


class IntakePublic(ORMModel):
    id: int
    filename: str
    report: IntakeReport
    dropped: dict[str, list[DroppedPrompt]]
    """At most the first 100 per reason; `report` counts them all."""
    status: str
    """'complete', or 'importing' (still running, or killed midway: not all of `report.kept` is stored)."""
    created_at: datetime


# --- tasks -------------------------------------------------------------------------------------------


class RankingUploadItem(TextKeys):
    """One line of a pre-generated responses file: K responses to rank for an imported prompt."""

    model_config = ConfigDict(extra="forbid")
    prompt: Text = Field(min_length=1)
    responses: list[Text] = Field(min_length=2, max_length=9)
    model: Text = Field(default="uploaded", min_length=1, max_length=MAX_NAME)


class ABUploadItem(TextKeys, ABPair):
    """One line of an A/B file: an `ABPair` (two models' responses to one imported prompt, as `instructrl eval
    answers --baseline` writes them), its text checked as every client's is and its model names no longer
    than their columns. It adds no field: the file's layout is ABPair's."""

    prompt: Text = Field(min_length=1)
    model_a: Text = Field(min_length=1, max_length=MAX_NAME)
    response_a: Text
    model_b: Text = Field(min_length=1, max_length=MAX_NAME)
    response_b: Text


class DemonstrationTasksCreate(BaseModel):
    split: Literal["train", "validation", "test", "all"] = "all"
    limit: int = Field(default=100, ge=1, le=100_000)
    """Prompts taken (oldest first) among those that have no demonstration task yet."""


class TasksCreated(BaseModel):
    created: int
    overlapping: int
    """Tasks that go to more than one labeler (per group)."""


class TaskView(BaseModel):
    """What a labeler sees of a task: no model names, A/B in display order."""

    kind: TaskKind
    prompt: str
    messages: list[Message] | None = None
    """The prompt's turns when it is a conversation (shown turn by turn; `prompt` is its transcript)."""
    responses: list[str] | None = None
    """Ranking: the K responses; a ranking lists indices into this list."""
    response_left: str | None = None
    response_right: str | None = None
    """A/B: the two responses as displayed ('a' is left, 'b' is right)."""


class AssignmentPublic(BaseModel):
    id: int
    status: Literal["pending", "done", "released", "expired"]
    """'released': given back; 'expired': not submitted in time (both went back to the pool)."""
    task: TaskView
    created_at: datetime
    expires_at: datetime | None = None
    """Pending: when it goes back to the pool unless submitted."""


class ResponseLabelIn(ResponseLabel):
    """A labeler's judgement of one response as submitted: the Likert score is required, as on the form.
    (A model's `strict` does not reach the models inside it, so this one says it too.)"""

    model_config = ConfigDict(extra="forbid", strict=True)
    likert: int = Field(ge=1, le=7)


class SubmissionCreate(TextKeys):
    """A labeler's answer. `submission_key` is generated by the client once per form: a retried request with
    the same key returns the stored submission instead of storing a second one. Strict types, as the form's
    fields are: "3" or true is not a response index or a score."""

    model_config = ConfigDict(extra="forbid", strict=True)
    submission_key: Text = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    response: Text | None = Field(default=None, max_length=100_000)
    """Demonstration: the response written for the prompt."""
    ranking: list[int] | None = None
    """Ranking: indices of `responses`, best first."""
    labels: list[ResponseLabelIn] | None = None
    """Ranking: Likert 1-7 and metadata flags per response, in `responses` order."""
    preferred: Literal["a", "b", "tie"] | None = None
    """A/B: the displayed response preferred ('a' left, 'b' right) or 'tie'."""
    note: Text | None = Field(default=None, max_length=2000)
    """Flag the task for review, saying why."""


class SubmissionPublic(ORMModel):
    id: int
    submission_key: str
    assignment_id: int
    kind: TaskKind
    created_at: datetime


# --- candidate generation ----------------------------------------------------------------------------


MAX_ROUND = 1_000_000
MAX_SEED = 2**31 - 1
"""The `integer` column's largest value on PostgreSQL (past it: a 500 there, and past 2**63 on SQLite too)."""
MAX_PATH = 4096
"""Characters in a checkpoint directory: Linux's PATH_MAX, in bytes (a longer path cannot be opened anyway)."""


class CheckpointIn(TextKeys):
    """One policy that writes candidates in a generation job."""

    model_config = ConfigDict(extra="forbid")
    checkpoint: Text = Field(min_length=1, max_length=MAX_PATH)
    """A Hugging Face causal LM directory (e.g. an instructrl SFT or PPO run's final/)."""
    model_name: Text | None = Field(default=None, min_length=1, max_length=MAX_NAME)
    """Name recorded with its responses (default: the directory name)."""


class GenerationJobCreate(TextKeys):
    """Either `checkpoint` (one policy writes all K candidates) or `checkpoints` (the K candidates are split
    between them as evenly as can be, the first ones getting one more, e.g. the current policy and the
    previous one)."""

    model_config = ConfigDict(extra="forbid")
    checkpoint: Text | None = Field(default=None, min_length=1, max_length=MAX_PATH)
    """A Hugging Face causal LM directory (e.g. an instructrl SFT or PPO run's final/)."""
    model_name: Text | None = Field(default=None, min_length=1, max_length=MAX_NAME)
    """Name recorded with the responses (default: the directory name)."""
    checkpoints: list[CheckpointIn] | None = Field(default=None, min_length=1, max_length=9)
    round: int | None = Field(default=None, ge=1, le=MAX_ROUND)
    """The labeling round (default: one more than the latest round, or 1). A round may be the latest or the
    next one; prompts that already have a ranking task in it are skipped."""
    split: Literal["train", "validation", "test", "all"] = "all"
    limit: int = Field(default=20, ge=1, le=10_000)
    """Prompts taken (oldest first) among those with no ranking task in the round yet."""
    k: int = Field(default=4, ge=2, le=9)
    max_new_tokens: int = Field(default=64, ge=1, le=4096)
    temperature: float = Field(default=1.0, gt=0.0, le=5.0)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)

    @model_validator(mode="after")
    def _one_way_to_name_checkpoints(self) -> GenerationJobCreate:
        if (self.checkpoint is None) == (self.checkpoints is None):
            raise ValueError("give either 'checkpoint' (one model) or 'checkpoints' (a list), not both")
        if self.checkpoints is not None and self.model_name is not None:
            raise ValueError("'model_name' goes with 'checkpoint'; name each of 'checkpoints' in it")
        if len(self.sources()) > self.k:
            raise ValueError(f"{len(self.sources())} checkpoints for k={self.k}: each needs a candidate")
        return self

    def sources(self) -> list[CheckpointIn]:
        if self.checkpoints is not None:
            return self.checkpoints
        assert self.checkpoint is not None
        return [CheckpointIn(checkpoint=self.checkpoint, model_name=self.model_name)]


class JobCheckpoint(BaseModel):
    checkpoint: str
    model_name: str
    k: int
    """Candidates per prompt it writes."""


class GenerationJobPublic(ORMModel):
    id: int
    round: int
    checkpoint: str
    model_name: str
    """The first checkpoint and its name (all of them: `checkpoints`)."""
    checkpoints: list[JobCheckpoint]
    k: int
    status: Literal["queued", "running", "done", "failed"]
    done: int
    total: int
    tasks_created: int
    error: str | None
    created_at: datetime
    finished_at: datetime | None


# --- quality -----------------------------------------------------------------------------------------


class LabelerAgreement(BaseModel):
    labeler: str
    group: str
    overlapping_tasks: int
    pairs_compared: int
    agreement: float | None


class PairAgreement(BaseModel):
    labeler_a: str
    labeler_b: str
    tasks: int
    pairs_compared: int
    agreement: float


class AgreementReport(BaseModel):
    """Pairwise agreement on rankings given by two labelers to the same task: the fraction of response
    pairs that both order the same way (InstructGPT reports 72.6 +- 1.5% among training labelers)."""

    overall: float | None
    overlapping_tasks: int
    pairs_compared: int
    per_labeler: list[LabelerAgreement]
    per_pair: list[PairAgreement]


class LabelerThroughput(BaseModel):
    labeler: str
    group: str
    demonstrations: int
    rankings: int
    ab: int
    total: int
    median_seconds: float | None
    """Median time from getting a task to submitting it."""
    per_hour: float | None
    """Submissions per hour between the labeler's first and last submission (once that is 15 minutes or more)."""


class FlaggedItem(BaseModel):
    kind: Literal["metadata", "note", "pii"]
    prompt: str
    detail: str
    labeler: str | None
    task_id: int | None


class RoundAgreement(BaseModel):
    """Agreement among the rankings of one labeling round."""

    round: int
    ranking_tasks: int
    rankings: int
    """Rankings submitted (all labelers)."""
    overall: float | None
    overlapping_tasks: int
    pairs_compared: int


class QualityReport(BaseModel):
    agreement: AgreementReport
    """All rounds together."""
    rounds: list[RoundAgreement]
    throughput: list[LabelerThroughput]
    flagged: list[FlaggedItem]


class ExportSummary(BaseModel):
    files: dict[str, int]
    """Records written per file (relative path), including empty files."""
    excluded_heldout: int
    """Held-out labelers' demonstrations and rankings kept out of the training files."""
    round: int | None = None
    """The one labeling round exported (its comparisons only); None: everything, all rounds."""
    comparisons_per_round: dict[int, int] = {}
    """Comparisons exported per round (held-out ones included)."""
