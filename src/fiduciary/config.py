"""One settings object: environment variables ``FIDUCIARY_*``, overridden by CLI flags."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from fiduciary.errors import ConfigurationError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FIDUCIARY_", extra="ignore")

    #: Releasing an access package and fulfilling an erasure need a second person of the
    #: privacy office (not who verified the request), and releasing a legal hold someone
    #: other than who placed it. Off only for a one-person office (the ROPA says so).
    privacy_two_person: bool = True
    #: Where the embedded database, keyring and logs live.
    data_dir: Path = Path("./fiduciary-data")
    #: A SQLAlchemy URL; unset means SQLite in ``data_dir``. PostgreSQL: ``postgresql+psycopg://…``.
    database_url: str | None = None
    #: Where subject data keys live, apart from the database (crypto-shredding must reach
    #: database backups). Unset means ``keys.db`` (SQLite) in ``data_dir``.
    keystore_url: str | None = None
    #: Base64 of 32 bytes. Unset means a generated ``master.key`` file in ``data_dir``.
    master_key: SecretStr | None = None
    #: A data-map YAML replacing the default insurance map.
    datamap: Path | None = None
    #: A policy-pack YAML replacing the default insurance pack.
    policy: Path | None = None
    #: Argon2id cost for staff passwords (defaults: argon2-cffi's RFC 9106 low-memory profile).
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    #: Seconds an unwrapped subject key stays in memory.
    dek_cache_seconds: float = 300.0
    #: Sign a checkpoint every N events or T seconds, whichever comes first.
    audit_checkpoint_events: int = 1000
    audit_checkpoint_seconds: float = 5.0
    #: Keep audit events at least this long (HIPAA 164.316: 6 years; NYDFS 500.6: 5).
    audit_retention_days: int = 2191
    #: Dates that are not business days (CCPA acknowledgement), comma-separated YYYY-MM-DD.
    dsr_holidays: str = ""
    #: Statutory periods (``fiduciary.privacy.deadlines``) count the days of this IANA time
    #: zone: a request is received on its local day and falls due at the end of a local day.
    controller_timezone: str = "UTC"
    #: Public-holiday calendars (``holidays`` package codes: ``IE``, ``DE-BY``), comma-
    #: separated, whose days are not working days for GDPR periods (Regulation 1182/71 Art.
    #: 3(4)) and for CCPA business days; ``dsr_holidays`` are closed on top of them.
    gdpr_holiday_calendars: str = ""
    ccpa_holiday_calendars: str = "US-CA"
    #: ``fiduciary serve`` runs the retention job this often (hours); 0 turns it off (then run
    #: ``fiduciary retention run`` from cron).
    retention_interval_hours: float = 24.0
    #: ``fiduciary serve`` compares every record row with its latest write event this often
    #: (hours; ``vault.rollback``); 0 turns it off (then run ``fiduciary audit verify
    #: --records`` from cron).
    records_check_interval_hours: float = Field(24.0, ge=0)
    #: Exposes bench-only endpoints (plaintext baseline). Never enable in production.
    bench_endpoints: bool = False
    #: Largest request body the API reads (bytes); a larger one is refused with 413.
    max_body_bytes: int = Field(1_048_576, ge=1024)
    #: Serves interactive API docs at ``/docs`` (Swagger UI from local assets; off in
    #: production: least functionality). ``/openapi.json`` is always served.
    api_docs: bool = False
    #: The console's session cookie is ``Secure`` (sent over HTTPS only): on whenever the
    #: server is reached over TLS (directly or behind a TLS-terminating proxy).
    console_secure_cookie: bool = False
    #: Password hashes (Argon2id, 64 MiB each) computed at once, outside any database lock;
    #: more logins wait their turn.
    password_hash_concurrency: int = Field(4, ge=1)
    #: Login and enrolment throttles: attempts per client address and for the whole server
    #: in a sliding window; above either, 429 ``rate_limited`` with Retry-After.
    login_rate_per_client: int = Field(30, ge=1)
    login_rate_global: int = Field(300, ge=1)
    login_rate_window_seconds: float = Field(60.0, gt=0)
    #: API-key lifetime (days): the default for a key created without one, and the maximum.
    api_key_default_days: int = Field(365, ge=1)
    api_key_max_days: int = Field(730, ge=1)
    #: A one-time enrolment code (new or re-enrolled user) is valid this many hours.
    enrolment_code_hours: int = Field(72, ge=1)

    #: A verified API key or staff session is kept in memory this long (seconds) for the
    #: requests that follow; every change to it is seen at once on every worker through a
    #: generation counter in the database (``fiduciary.access.authcache``). 0: no cache.
    auth_cache_seconds: float = Field(30.0, ge=0)
    #: ``fiduciary serve`` processes (uvicorn workers); one of them, elected through the
    #: database, runs the background work.
    workers: int = Field(1, ge=1)
    #: The background lease (seconds): its holder renews it every third of it; when the
    #: holder dies another process takes over within this time.
    lease_seconds: float = Field(15.0, ge=1)

    #: A detection-pack YAML replacing the default pack (``fiduciary.monitoring``).
    detections: Path | None = None
    #: ``fiduciary serve`` reads new audit events for the detections this often (seconds);
    #: 0 turns it off (then run ``fiduciary monitor run`` from cron or another process).
    monitor_interval_seconds: float = Field(1.0, ge=0)
    #: Alerts at or above this severity go out on the configured channels.
    alert_min_severity: str = "medium"
    #: Webhook: each alert as a JSON POST, signed ``X-Fiduciary-Signature: sha256=<hex>``
    #: (HMAC-SHA256 of the body under the secret).
    alert_webhook_url: str | None = None
    alert_webhook_secret: SecretStr | None = None
    #: Syslog receiver ``udp://host:port`` or ``tcp://host:port``, in ``syslog`` (RFC 5424)
    #: or ``cef`` form.
    alert_syslog_url: str | None = None
    alert_syslog_format: str = "syslog"
    #: Email through SMTP: host, port, sender and comma-separated recipients.
    alert_smtp_host: str | None = None
    alert_smtp_port: int = 25
    alert_email_from: str = "fiduciary@localhost"
    alert_email_to: str = ""
    #: A breach-notification rules YAML replacing the packaged table (``fiduciary.incidents``).
    breach_rules: Path | None = None
    #: Staff accounts unused this many days (since the last login, or creation if never) are
    #: disabled (NYDFS 500.7); the scheduler checks every ``dormant_check_interval_hours``
    #: (0: never; then run ``fiduciary users disable-dormant`` from cron).
    dormant_disable_days: int = Field(90, ge=1)
    dormant_check_interval_hours: float = Field(24.0, ge=0)
    #: An access review campaign's items are due this many days after it opens, by default.
    review_due_days: int = Field(30, ge=1)
    #: A training-catalogue YAML replacing the packaged one (``fiduciary.workforce``).
    training_catalogue: Path | None = None
    #: New staff see non-sensitive classes (the catalogue's ``grace_classes``) without the
    #: courses for this many days from account creation; sensitive classes wait.
    training_grace_days: int = Field(30, ge=0)
    #: Graded attempts a person may make at one course in 24 hours (no guessing the key).
    training_attempts_per_day: int = Field(5, ge=1)
    #: ``fiduciary serve`` sends expiry reminders (30 and 7 days ahead) this often (hours);
    #: 0 turns it off (then run ``fiduciary training remind`` from cron).
    training_reminder_interval_hours: float = Field(24.0, ge=0)
    #: The ``account.homePage`` of xAPI actors and the base of course activity ids.
    training_xapi_home_page: str = "https://fiduciary.invalid"
    #: Bearer token for ``/metrics`` from other than the loopback address (unset: loopback only).
    metrics_token: SecretStr | None = None

    #: Speak-up receipts (``fiduciary.workforce.speakup``): Argon2id cost of the stored index
    #: of a receipt, paid again by every guess (RFC 9106's second recommendation by default).
    speakup_kdf_time_cost: int = Field(3, ge=1)
    speakup_kdf_memory_kib: int = Field(65536, ge=8)
    #: Reports, and wrong receipts, per client address per hour (the address is never stored:
    #: an in-memory count under an hourly rotated key); above either, 429.
    speakup_reports_per_hour: int = Field(5, ge=1)
    speakup_receipt_failures_per_hour: int = Field(10, ge=1)
    #: ``fiduciary serve`` runs the retaliation watch this often (seconds); 0 turns it off
    #: (then run ``fiduciary speakup watch`` from cron).
    speakup_watch_interval_seconds: float = Field(60.0, ge=0)

    #: A controls-catalogue YAML replacing the packaged one (``fiduciary.compliance``).
    compliance_controls: Path | None = None
    #: ``fiduciary serve`` runs every control this often (hours; the first run one interval
    #: after the start); 0 turns it off (then run ``fiduciary compliance check`` from cron).
    compliance_check_interval_hours: float = Field(24.0, ge=0)
    #: The key-encryption key is due for rotation after this many days (control kek-rotation).
    kek_rotation_days: int = Field(365, ge=1)
    #: An alert still open (not triaged) after this many hours fails control alerts-triaged.
    alert_triage_hours: int = Field(24, ge=1)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'fiduciary.db').resolve()}"

    def resolved_keystore_url(self) -> str:
        if self.keystore_url:
            return self.keystore_url
        return f"sqlite:///{(self.data_dir / 'keys.db').resolve()}"

    def holidays(self) -> list[date]:
        try:
            return [date.fromisoformat(d.strip()) for d in self.dsr_holidays.split(",")
                    if d.strip()]
        except ValueError:
            raise ConfigurationError("FIDUCIARY_DSR_HOLIDAYS must be comma-separated "
                                     "YYYY-MM-DD dates") from None

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"
