"""The detection pack: which detections run, their severity, score and thresholds, as YAML that
ships with the package and an insurer may replace (``FIDUCIARY_DETECTIONS``). Validated on
load like the policy pack: a wrong pack stops the start, naming every problem."""

from __future__ import annotations

from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fiduciary.datamap import Classification, DataMap
from fiduciary.errors import DetectionsInvalid, FieldProblem

DEFAULT_PACK = "default_detections.yaml"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Detection(_Strict):
    enabled: bool = True
    severity: Severity
    score: float = Field(ge=0, le=100)


class WatchlistSubject(Detection):
    pass


class SelfAccess(Detection):
    pass


class CoworkerAccess(Detection):
    pass


class SameSurname(Detection):
    #: Only surnames at most this share of customers hold (a common one says nothing).
    max_share: float = Field(0.0005, gt=0, le=1)
    #: ... or at most this many customers, whatever the share.
    rare_count: int = Field(5, ge=1)
    #: A common surname counts when the same customer's record is opened on this many
    #: distinct days ...
    common_repeat_days: int = Field(2, ge=2, le=31)
    #: ... within this many days.
    common_window_days: int = Field(30, ge=1, le=365)


class VolumeSpike(Detection):
    history_days: int = Field(30, ge=7, le=365)
    min_history_days: int = Field(7, ge=1)
    mad_factor: float = Field(6, gt=0)
    peer_percentile: float = Field(99, gt=0, le=100)
    min_subjects: int = Field(15, ge=1)


class SlowDrip(Detection):
    window_days: int = Field(7, ge=2, le=90)
    history_days: int = Field(30, ge=7, le=365)
    peer_factor: float = Field(1.5, gt=0)
    min_peers: int = Field(3, ge=1)
    min_subjects: int = Field(30, ge=1)


class OffHours(Detection):
    min_history_days: int = Field(7, ge=1)
    history_days: int = Field(30, ge=7, le=365)
    min_hour_share: float = Field(0.01, ge=0, lt=1)


class SearchSweep(Detection):
    window_minutes: int = Field(15, ge=1, le=1440)
    min_searches: int = Field(20, ge=2)
    max_hit_ratio: float = Field(0.25, ge=0, le=1)
    fields_per_value: int = Field(3, ge=2)
    values_per_field: int = Field(12, ge=2)


class BulkExport(Detection):
    export_records: int = Field(500, ge=1)
    read_records: int = Field(150, ge=1)
    window_minutes: int = Field(30, ge=1, le=1440)


class BreakGlass(Detection):
    per_month_high: int = Field(3, ge=1)


class DormantAccount(Detection):
    days: int = Field(90, ge=1)


class FailedLoginBurst(Detection):
    window_minutes: int = Field(15, ge=1, le=1440)
    usernames_per_address: int = Field(5, ge=2)
    failures_per_user: int = Field(10, ge=2)


class DeniedBurst(Detection):
    window_minutes: int = Field(10, ge=1, le=1440)
    denials: int = Field(10, ge=2)


class NewApiKeyOrigin(Detection):
    min_history_events: int = Field(50, ge=1)
    volume_factor: float = Field(5, gt=1)
    min_hour_volume: int = Field(100, ge=1)


class Detections(_Strict):
    watchlist_subject: WatchlistSubject
    self_access: SelfAccess
    coworker_access: CoworkerAccess
    same_surname: SameSurname
    volume_spike: VolumeSpike
    slow_drip: SlowDrip
    off_hours: OffHours
    search_sweep: SearchSweep
    bulk_export: BulkExport
    break_glass: BreakGlass
    dormant_account: DormantAccount
    failed_login_burst: FailedLoginBurst
    denied_burst: DeniedBurst
    new_api_key_origin: NewApiKeyOrigin


class WorkingHours(_Strict):
    start: int = Field(7, ge=0, le=23)
    end: int = Field(19, ge=1, le=24)
    weekdays: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4])

    @field_validator("weekdays")
    @classmethod
    def _days(cls, v: list[int]) -> list[int]:
        if not v or any(not 0 <= d <= 6 for d in v):
            raise ValueError("weekdays are 0 (Monday) to 6 (Sunday), at least one")
        return v


class PackSettings(_Strict):
    timezone: str = "UTC"
    working_hours: WorkingHours = Field(default_factory=WorkingHours)
    handler_fields: dict[str, list[str]] = Field(default_factory=dict)
    watch_attributes: list[str] = Field(default_factory=lambda: ["vip", "employee"])

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name such as Europe/Paris)"
                             ) from None
        return v


class DetectionPack(_Strict):
    version: int = Field(ge=1, le=1)
    settings: PackSettings = Field(default_factory=PackSettings)
    detections: Detections
    source: str = ""

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.settings.timezone)

    def enabled(self) -> list[str]:
        return [name for name in Detections.model_fields
                if getattr(self.detections, name).enabled]

    def detection(self, name: str) -> Detection:
        d: Detection = getattr(self.detections, name)
        return d


DETECTION_IDS: tuple[str, ...] = tuple(Detections.model_fields)


def load_detections(path: Path | None, datamap: DataMap) -> DetectionPack:
    if path is None:
        text = resources.files("fiduciary.monitoring").joinpath(DEFAULT_PACK).read_text("utf-8")
        return parse_detections(text, f"<package>/{DEFAULT_PACK}", datamap)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise DetectionsInvalid(f"{path}: cannot read detection pack ({exc.strerror})",
                                [FieldProblem(str(path), "cannot read file")]) from None
    return parse_detections(text, str(path), datamap)


def parse_detections(text: str, source: str, datamap: DataMap) -> DetectionPack:
    problems: list[FieldProblem] = []
    try:
        doc: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "document"
        raise DetectionsInvalid(f"{source}: {where}: not valid YAML",
                                [FieldProblem(f"{source}: {where}", "not valid YAML")]) from None
    if not isinstance(doc, dict):
        doc = {}
    try:
        pack = DetectionPack.model_validate({**doc, "source": source})
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "document"
            problems.append(FieldProblem(f"{source}: {where}", err["msg"]))
        _raise(problems)
        raise  # unreachable: _raise raised
    for collection, fields in pack.settings.handler_fields.items():
        spec = datamap.collections.get(collection)
        if spec is None:
            problems.append(FieldProblem(f"{source}: settings.handler_fields.{collection}",
                                         "not a collection of the data map"))
            continue
        for name in fields:
            f = spec.fields.get(name)
            if f is None:
                problems.append(FieldProblem(
                    f"{source}: settings.handler_fields.{collection}.{name}",
                    "not a field of the collection"))
            elif f.classification.rank > Classification.INTERNAL.rank:
                # The monitor never decrypts: a handler must be named in a clear field.
                problems.append(FieldProblem(
                    f"{source}: settings.handler_fields.{collection}.{name}",
                    "must be a public or internal field (the monitor reads no sealed value)"))
    attributes = {n for spec in datamap.collections.values()
                  for n, f in spec.fields.items() if f.subject_attribute}
    for name in pack.settings.watch_attributes:
        if name not in attributes:
            problems.append(FieldProblem(f"{source}: settings.watch_attributes.{name}",
                                         "not a subject attribute of the data map"))
    _raise(problems)
    return pack


def _raise(problems: list[FieldProblem]) -> None:
    if problems:
        raise DetectionsInvalid("detection pack invalid: " + "; ".join(
            f"{p.field}: {p.reason}" for p in problems), problems)
