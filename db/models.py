"""The AlignLab schema: stimuli, studies and their triplet lists, participants, one row per response,
interaction events, and alignment runs.

Triplet convention (stated once, for the whole project): a stored triplet lists the odd one out
*last* where it is known (catch triplets, imported human choices, designed class-border triplets);
display order is randomised per trial and stored separately on the response.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """Timestamps come back naive from SQLite and aware from PostgreSQL; both are stored in UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


def _enum(cls: type[enum.Enum]) -> Enum:
    """Store enums by value as plain strings (portable across SQLite and PostgreSQL)."""
    return Enum(cls, native_enum=False, length=32, values_callable=lambda e: [m.value for m in e])


class TrialKind(enum.StrEnum):
    PRACTICE = "practice"
    EXPERIMENTAL = "experimental"
    CATCH = "catch"
    REPEAT = "repeat"


class JudgmentTask(enum.StrEnum):
    """What a trial asked. Odd one out: stim2 is the chosen odd one out of three. Anchor (2AFC, salmon/NEXT
    triplets): stim0 is the head, stim1 the image judged closer to it, stim2 the farther one -- a
    comparison s(head, stim1) > s(head, stim2) that says nothing about the pair (stim1, stim2)."""

    ODD_ONE_OUT = "odd_one_out"
    ANCHOR = "anchor"


class TripletLevel(enum.StrEnum):
    BETWEEN_CLASS = "between_class"
    WITHIN_CLASS = "within_class"
    CLASS_BORDER = "class_border"


class StudyStatus(enum.StrEnum):
    DRAFT = "draft"
    OPEN = "open"
    PAUSED = "paused"
    CLOSED = "closed"


class ParticipantStatus(enum.StrEnum):
    STARTED = "started"
    COMPLETED = "completed"
    NO_CONSENT = "no_consent"
    EARLY_EXIT = "early_exit"
    TIMED_OUT = "timed_out"


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StimulusSet(Base):
    __tablename__ = "stimulus_sets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    source: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)

    stimuli: Mapped[list[Stimulus]] = relationship(back_populates="stimulus_set", order_by="Stimulus.id")


class Stimulus(Base):
    """One image of a set; `path` is the serving copy relative to the data directory."""

    __tablename__ = "stimuli"
    __table_args__ = (
        UniqueConstraint("stimulus_set_id", "content_hash", name="uq_stimulus_set_hash"),
        UniqueConstraint("stimulus_set_id", "name", name="uq_stimulus_set_name"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    stimulus_set_id: Mapped[int] = mapped_column(
        ForeignKey("stimulus_sets.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(500))  # path in the imported folder, e.g. "animal/dog/1.jpg"
    path: Mapped[str] = mapped_column(Text)
    thumbnail_path: Mapped[str | None] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the original file
    category: Mapped[str] = mapped_column(String(200), index=True)
    superordinate: Mapped[str] = mapped_column(String(200), default="")
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    n_bytes: Mapped[int] = mapped_column(Integer)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)

    stimulus_set: Mapped[StimulusSet] = relationship(back_populates="stimuli")


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    stimulus_set_id: Mapped[int | None] = mapped_column(ForeignKey("stimulus_sets.id"))
    status: Mapped[StudyStatus] = mapped_column(_enum(StudyStatus), default=StudyStatus.DRAFT)
    target_participants: Mapped[int | None] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)  # StudyConfig as a dict
    salt: Mapped[str] = mapped_column(String(64))  # per-study salt for pseudonymised exports
    imported: Mapped[bool] = mapped_column(Boolean, default=False)  # judgments collected elsewhere
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # number of the latest StudyConfigVersion; `config` always holds that version's settings
    config_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

    lists: Mapped[list[TripletList]] = relationship(back_populates="study", order_by="TripletList.list_index")


class StudyConfigVersion(Base):
    """Every config a study has had: version 1 at creation, one more per edit. Participants record the
    version current when they consented, so an edit (new consent text, timing) never rewrites the past."""

    __tablename__ = "study_config_versions"
    __table_args__ = (UniqueConstraint("study_id", "version", name="uq_config_version_study_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)  # StudyConfig as a dict
    target_participants: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(Text, default="")  # what changed, in words
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TripletList(Base):
    """One participant-sized sequence of trials; participants are assigned to lists."""

    __tablename__ = "triplet_lists"
    __table_args__ = (UniqueConstraint("study_id", "list_index", name="uq_list_study_index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    list_index: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int | None] = mapped_column(Integer)

    study: Mapped[Study] = relationship(back_populates="lists")
    trials: Mapped[list[Trial]] = relationship(back_populates="triplet_list", order_by="Trial.trial_index")


class Trial(Base):
    """A designed trial: three stimulus ids (odd one out last where known), its kind and level."""

    __tablename__ = "trials"
    __table_args__ = (UniqueConstraint("list_id", "trial_index", name="uq_trial_list_index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("triplet_lists.id", ondelete="CASCADE"), index=True)
    trial_index: Mapped[int] = mapped_column(Integer)
    block: Mapped[int] = mapped_column(Integer, default=0)  # -1 = practice, 0.. = experimental blocks
    stim0_id: Mapped[int] = mapped_column(ForeignKey("stimuli.id"))
    stim1_id: Mapped[int] = mapped_column(ForeignKey("stimuli.id"))
    stim2_id: Mapped[int] = mapped_column(ForeignKey("stimuli.id"))
    odd_known: Mapped[bool] = mapped_column(Boolean, default=False)  # True: stim2 is the correct odd one out
    kind: Mapped[TrialKind] = mapped_column(_enum(TrialKind))
    level: Mapped[TripletLevel | None] = mapped_column(_enum(TripletLevel))
    triplet_key: Mapped[str] = mapped_column(String(64), index=True)  # sorted ids "a-b-c": same triplet
    # anchor trials have the key "head:a-b" (the head matters)
    task: Mapped[JudgmentTask] = mapped_column(
        _enum(JudgmentTask), default=JudgmentTask.ODD_ONE_OUT, server_default=JudgmentTask.ODD_ONE_OUT.value
    )
    # a fixed left/middle/right order as positions into (stim0, stim1, stim2), e.g. "201"; None = random per
    # participant (an imported design may keep its file's order)
    display_order: Mapped[str | None] = mapped_column(String(3))
    # adaptive designs: why this triplet was asked ({"strategy", "score", "teacher_run"}); None when designed
    selection: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    triplet_list: Mapped[TripletList] = relationship(back_populates="trials")


class Participant(Base):
    """One participant session in one study (a Prolific PID or an anonymous/simulated id)."""

    __tablename__ = "participants"
    __table_args__ = (UniqueConstraint("study_id", "external_id", name="uq_participant_study_external"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str] = mapped_column(String(128))  # PROLIFIC_PID, or a generated anonymous id
    external_study_id: Mapped[str | None] = mapped_column(String(128))  # STUDY_ID
    external_session_id: Mapped[str | None] = mapped_column(String(128))  # SESSION_ID
    source: Mapped[str] = mapped_column(
        String(32), default="anonymous"
    )  # prolific | anonymous | simulated | imported
    is_simulated: Mapped[bool] = mapped_column(Boolean, default=False)
    # a researcher's preview run through the real flow: kept out of targets, list counts, QC and data
    is_pilot: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    list_id: Mapped[int | None] = mapped_column(ForeignKey("triplet_lists.id"), index=True)
    status: Mapped[ParticipantStatus] = mapped_column(
        _enum(ParticipantStatus), default=ParticipantStatus.STARTED
    )
    consent: Mapped[bool | None] = mapped_column(Boolean)
    demographics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    strategy: Mapped[str | None] = mapped_column(Text)
    browser: Mapped[dict[str, Any]] = mapped_column(default=dict)  # user agent, screen, window, DPR
    flow_state: Mapped[dict[str, Any]] = mapped_column(default=dict)  # step reached before the trials
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    excluded: Mapped[bool] = mapped_column(Boolean, default=False)  # analysis decision, not payment
    exclusion_reason: Mapped[str | None] = mapped_column(Text)
    payment_status: Mapped[str] = mapped_column(String(32), default="pending")  # pending|approved|rejected
    payment_reason: Mapped[str | None] = mapped_column(Text)  # why a submission was rejected
    bonus_cents: Mapped[int | None] = mapped_column(Integer)  # bonus in the Prolific study's currency, cents
    config_version: Mapped[int | None] = mapped_column(Integer)  # the study config version consented under


class Response(Base):
    """One row per trial: answered, timed out, or `unavailable` (an image of the trial was missing on the
    server, verified when the row was stored; such a row is replaced by the trial's next real outcome).
    (participant, trial_index) is unique."""

    __tablename__ = "responses"
    __table_args__ = (
        UniqueConstraint("participant_id", "trial_index", name="uq_response_participant_trial"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"), index=True)
    trial_index: Mapped[int] = mapped_column(Integer)
    trial_id: Mapped[int | None] = mapped_column(ForeignKey("trials.id"))
    shown_left_id: Mapped[int] = mapped_column(ForeignKey("stimuli.id"))
    shown_middle_id: Mapped[int] = mapped_column(ForeignKey("stimuli.id"))
    shown_right_id: Mapped[int] = mapped_column(ForeignKey("stimuli.id"))
    chosen_position: Mapped[int | None] = mapped_column(Integer)  # 0 left, 1 middle, 2 right; None = timeout
    chosen_stimulus_id: Mapped[int | None] = mapped_column(ForeignKey("stimuli.id"))
    rt_ms: Mapped[float | None] = mapped_column(Float)  # client-side: response minus onset
    client_onset_ms: Mapped[float | None] = mapped_column(Float)  # epoch ms (performance.timeOrigin + now())
    server_received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    input_modality: Mapped[str] = mapped_column(
        String(16), default="mouse"
    )  # mouse|touch|keyboard|none|simulated
    timed_out: Mapped[bool] = mapped_column(Boolean, default=False)
    unavailable: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class InteractionEvent(Base):
    """Blur, focus, fullscreen exit, visibility, resize, reload, image errors..."""

    __tablename__ = "interaction_events"
    __table_args__ = (
        UniqueConstraint("participant_id", "client_event_id", name="uq_event_participant_client"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"), index=True)
    client_event_id: Mapped[str] = mapped_column(String(64))  # dedupes re-sent events
    kind: Mapped[str] = mapped_column(String(32), index=True)
    trial_index: Mapped[int | None] = mapped_column(Integer)
    client_time_ms: Mapped[float | None] = mapped_column(Float)
    server_received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Run(Base):
    """An alignment-engine job: features, teacher, pseudo-labels, student, eval or map."""

    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_kind_status", "kind", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200), default="")
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id", ondelete="SET NULL"), index=True)
    parent_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[RunStatus] = mapped_column(_enum(RunStatus), default=RunStatus.QUEUED)
    progress: Mapped[float] = mapped_column(Float, default=0.0)  # 0..1
    message: Mapped[str] = mapped_column(Text, default="")
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    artifacts: Mapped[dict[str, Any]] = mapped_column(default=dict)  # name -> path under the data dir
    error: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LoginAttempt(Base):
    """Researcher login attempts, for rate limiting."""

    __tablename__ = "login_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_key: Mapped[str] = mapped_column(String(128), index=True)
    succeeded: Mapped[bool] = mapped_column(Boolean)
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
