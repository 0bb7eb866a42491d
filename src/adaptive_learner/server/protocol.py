"""The API's contract: pydantic models of every request and response, validated before any work.

Runtime limits (inputs per request, characters per input) depend on the server's settings and are
checked in ``serving.py``; what is fixed (types, ranges, choices, unknown keys) is checked here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

JobState = Literal["queued", "running", "succeeded", "failed"]


def _unicode(text: str) -> str:
    """JSON can escape a lone surrogate (``"\\ud800"``): not Unicode text, so no tokenizer or file takes it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text (a lone surrogate such as \\ud800)") from None
    return text


Text = Annotated[str, AfterValidator(_unicode)]  # every string a request may carry


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(_Strict):
    """Inputs to label: text (pairs as ``'first ||| second'``) or an object of the task's fields."""

    inputs: list[Text | dict[Text, Text]] = Field(min_length=1,
                                                  description="texts, or objects of fields for pair tasks")
    task: Text | None = Field(default=None, description="the task to answer; omitted: each input is routed")


class PredictionOut(BaseModel):
    """One answered input: what ``Learner.predict`` says of it (fields it adds are passed on)."""

    model_config = ConfigDict(extra="allow")

    label: str
    confidence: float = Field(description="the label's probability among the task's labels")
    task: str
    adapter: str
    routed: bool = Field(description="whether the task was inferred from the input")
    route_confidence: float | None = Field(default=None, description="the router's posterior for the task")


class PredictResponse(BaseModel):
    predictions: list[PredictionOut]
    library_version: str = Field(description="the committed manifest the answers were computed from")


class LearnRequest(_Strict):
    """What to learn and how: the options of ``alearn learn``. An upload comes as multipart form fields."""

    task: Text | None = Field(default=None, description="a built-in task name (or upload a file instead)")
    description: Text | None = Field(default=None, max_length=2000, description="the instruction, for an upload")
    name: Text | None = Field(default=None, description="task name (default: the file's stem or the task)")
    text_column: list[Text] | None = Field(default=None, description="text column(s); several for pairs")
    label_column: Text = "label"
    labels: list[Text] | None = Field(default=None, description="label names, in order")
    template: Text | None = Field(default=None, max_length=2000, description="the prompt after the description, "
                                  "for an upload: each text column as {column}, as `alearn learn --template`")
    family: Text = "unknown"
    max_train: int = Field(default=256, gt=0, le=100_000)
    steps: int = Field(default=300, gt=0, le=100_000)
    early_stop: bool = True
    patience: int = Field(default=4, gt=0, le=1000)
    monitor: Literal["accuracy", "loss"] = Field(default="accuracy", description="as `alearn learn --monitor`")
    eval_every: int = Field(default=10, gt=0, le=100_000)
    lr_retries: int = Field(default=0, ge=0, le=10, description="as `alearn learn --lr-retries`")
    batch_size: int = Field(default=8, gt=0, le=1024)
    lr: float = Field(default=2e-3, gt=0, lt=10)
    max_length: int = Field(default=256, gt=0, le=8192)
    seed: int = Field(default=0, ge=0, lt=2**32)
    label_scoring: Literal["first-token", "mean", "sum"] | None = None
    head: bool = Field(default=True, description="also fit a linear head on the frozen features, mixed in")
    head_mix: Literal["gated", "held-out"] | Annotated[float, Field(ge=0, le=1)] = Field(
        default="gated", description="how the head is mixed in, as `alearn learn --head-mix`")
    head_views: Literal["pair", "text", "text,pair", "pair,text", ""] = Field(
        default="text,pair", description="the encoder views the head may add, as `alearn learn --head-views`")
    head_view_rule: Literal["min", "one-se", "gated"] = Field(
        default="gated", description="how the head picks its views, as `alearn learn --head-view-rule`")
    head_calibrate: Literal["none", "head", "both"] = Field(
        default="none", description="temperatures fitted before the mix, as `alearn learn --head-calibrate`")
    force_new: bool = False
    reuse: Text | None = None
    dry_run: bool = False
    guard: bool = Field(default=False, description="as `alearn learn --guard`: a reuse that costs one of the "
                                                   "adapter's other tasks accuracy is not kept: its weights become a new adapter")
    router: Literal["calibrated", "softmax-threshold"] = "calibrated"
    init: Literal["fresh", "nearest"] = "fresh"


class EvaluateRequest(_Strict):
    """Which learned tasks to score again on the test examples kept when each was learned."""

    tasks: list[Text] | None = Field(default=None, min_length=1, description="learned tasks; omitted: every task")


class RetentionOut(BaseModel):
    """One task then and now: accuracy on its kept test examples when learned and now, and the paired change."""

    task: str
    verdict: Literal["kept", "lost", "gained", "no kept examples"] = Field(
        description="kept (the change's 95% interval holds 0), lost or gained (it lies below or above 0); no kept "
                    "examples: learned by a release that kept none")
    adapter: str | None = None
    examples: int | None = None
    then: float | None = None
    now: float | None = None
    change: float | None = Field(default=None, description="now - then (paired), with its 95% interval low..high")
    low: float | None = None
    high: float | None = None


class EvaluateResponse(BaseModel):
    results: list[RetentionOut]
    lost: int = Field(description="how many tasks scored below what they scored when learned")
    library_version: str


class JobAccepted(BaseModel):
    id: str
    state: JobState
    url: str


class Progress(BaseModel):
    step: int
    steps: int


class JobOut(BaseModel):
    """A learn job: where it is, and what it decided and reached."""

    id: str
    state: JobState
    task: str
    dry_run: bool
    phase: str | None = Field(default=None, description="starting, loading, deciding, training, evaluating, done")
    progress: Progress | None = None
    action: str | None = None
    adapter: str | None = None
    confidence: float | None = None
    explanation: str | None = None
    decision: dict[str, Any] | None = None
    init_from: str | None = None
    rejected: str | None = Field(default=None, description="with guard: the adapter whose reuse was not kept")
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    retention: list[dict[str, Any]] | None = Field(
        default=None, description="on reuse: the adapter's other tasks on their stored test examples, when "
                                  "learned and now, with the paired change's 95% interval")
    train: dict[str, Any] | None = None
    error: str | None = Field(default=None, description="one line, when the job failed")
    created: float
    started: float | None = None
    finished: float | None = None


class JobList(BaseModel):
    jobs: list[JobOut]


class AdapterOut(BaseModel):
    name: str
    tasks: list[str]
    trainable_params: int | None = None
    updated: str | None = None


class TaskOut(BaseModel):
    name: str
    adapter: str
    family: str
    input_fields: list[str]
    labels: list[str]
    accuracy: float | None = None


class LibraryOut(BaseModel):
    path: str
    backbone: str
    version: str
    adapters: list[AdapterOut]
    tasks: list[TaskOut]
    history: list[dict[str, Any]] = Field(description="the most recent decisions, newest last")


class DeleteOut(BaseModel):
    adapter: str
    tasks: list[str]


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    backbone: str
    device: str = Field(description="where the backbone scores: cpu, cuda, cuda:N")
    library_version: str
    adapters: int
    tasks: int
    jobs_running: int
    problem: str | None = Field(default=None, description="why the last library reload failed, if it did")


class ErrorDetail(BaseModel):
    type: str = Field(description="a stable code: invalid_input, limit_exceeded, unauthorized, not_found, ...")
    message: str
    limit: str | None = Field(default=None, description="the limit that was exceeded, by its option name")
    request_id: str | None = None


class ErrorOut(BaseModel):
    """The one error shape of every endpoint."""

    error: ErrorDetail
