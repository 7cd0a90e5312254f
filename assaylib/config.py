"""Service configuration read from ``ASSAY_*`` environment variables (ARCHITECTURE §8)."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from assaylib.jobs import DEFAULT_LOCALE, LOCALES
from assaylib.tiers import DEFAULT_TIERS, Tiers

__all__ = ["ConfigError", "Settings", "listen_addr", "parse_duration"]

ENV_PREFIX = "ASSAY_"
LOG_FORMATS = ("auto", "json", "text")
"""ASSAY_LOG_FORMAT's values (``auto``: text on a terminal, JSON otherwise)."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ConfigError(Exception):
    """A configuration value is missing or malformed.

    ``problems`` maps each offending environment variable to what is wrong with it.
    """

    def __init__(self, message: str, problems: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.problems: dict[str, str] = dict(problems or {})


def parse_duration(text: str) -> float:
    """Return seconds for ``"250ms"``, ``"90s"``, ``"10m"``, ``"2h"``, ``"7d"`` or bare ``"1.5"``.

    Raises ConfigError for anything else, including negative values.
    """
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(
            f"invalid duration {text!r}: expected a non-negative number with an optional "
            "unit ms, s, m, h or d (e.g. 90s, 10m, 1.5)"
        )
    number, unit = match.groups()
    seconds = float(number) * _UNIT_SECONDS[unit or "s"]
    if not math.isfinite(seconds):
        raise ConfigError(f"invalid duration {text!r}: not finite")
    return seconds


def listen_addr(addr: str) -> str:
    """Turn a ``host:port`` address into ``[::]:port`` to bind on every interface."""
    _host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"invalid address {addr!r}: expected host:port")
    return f"[::]:{port}"


@dataclass(frozen=True)
class Settings:
    """Everything an Assay process reads from its environment.

    Each field ``name`` is read from ``ASSAY_<NAME>``; durations are in seconds and accept
    ``90s``/``10m``/``2h``/``7d``/``250ms`` or a bare number of seconds.
    """

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/assay"
    """SQLAlchemy URL of the archive's PostgreSQL database."""
    nats_url: str = "nats://127.0.0.1:4222"
    """NATS server URL(s), comma-separated, for JetStream."""
    archive_addr: str = "127.0.0.1:50052"
    """host:port of the archive service."""
    assessment_addr: str = "127.0.0.1:50051"
    """host:port of the assessment service."""
    notifier_addr: str = "127.0.0.1:50053"
    """host:port of the notifier service."""
    worker_addr: str = "127.0.0.1:50054"
    """host:port of the worker's gRPC health endpoint."""
    jwks_file: str = ""
    """Path of a JWKS file holding the public keys tokens are verified with (re-read every
    ``jwks_refresh`` and on an unknown ``kid``); a server needs this or ``jwks_url``."""
    jwks_url: str = ""
    """URL of a JWKS (an identity provider's ``jwks_uri``), used when ``jwks_file`` is empty."""
    jwks_refresh: float = 300.0
    """Seconds between re-reads of the JWKS (a removed key's tokens fail after the next)."""
    jwt_issuer: str = "assay"
    """Accepted token issuers (``iss``), comma-separated: e.g. the cluster's service-account
    issuer and the organisation's identity provider. ``assay`` is the local stack's."""
    jwt_audience: str = "assay"
    """The audience (``aud``) every token must name."""
    jwt_roles_claim: str = "roles"
    """The claim holding a token's roles; a dotted path reaches into nested objects."""
    jwt_tier_claim: str = "tier"
    """The claim holding a user's tier (e.g. ``premium``); a dotted path reaches into nested
    objects. Absent: the tier an operator set (``assay users tier``), else the default."""
    tiers: str = DEFAULT_TIERS
    """Tiers and their weights, ``name:weight`` highest priority first; the last is the
    default tier (``assay.jobs.analysis``). Workers serve the lanes in proportion to weight."""
    service_account_namespace: str = ""
    """Namespaces (comma-separated) whose ``assay-<name>`` service accounts are Assay's
    services; empty: any namespace's (set it on a cluster shared with others)."""
    service_token_file: str = ""
    """Path of the token this process presents to other services (re-read when it changes);
    ``{name}`` in it is replaced by the service's identity."""
    signing_key_file: str = ""
    """PEM private key that ``assay token mint`` signs with (the local stack's by default);
    never given to a service."""
    token_cost: int = 1
    """Tokens debited per submission or retry."""
    heartbeat_interval: float = 10.0
    """Seconds between a worker's heartbeats while it analyses a job."""
    lease_timeout: float = 0.0
    """Seconds an attempt's lease lasts past its last heartbeat; 0 means 3 × heartbeat."""
    stuck_after: float = 120.0
    """A PROCESSING job whose heartbeat is older than this is stuck."""
    max_processing: float = 600.0
    """A job PROCESSING longer than this is stuck even while it heartbeats."""
    analysis_timeout: float = 300.0
    """Upper bound on one analyzer run."""
    max_attempts: int = 3
    """Attempts before a job fails for good."""
    sweep_interval: float = 60.0
    """Seconds between stuck-job sweeps in the local stack."""
    sweep_max_fraction: float = 0.5
    """The sweep holds back when more than this fraction of in-flight jobs look stale."""
    max_inflight_per_user: int = 10
    """Queued plus processing jobs one user may have at once; 0 means unlimited."""
    queued_per_user: int = 32
    """Jobs of one user queued in the stream at once: the relay holds the rest back in the
    archive and releases them as that user's queued jobs start, so another user's job waits
    behind at most this many of each user's (per-user fairness within a lane); 0 means no
    limit (first come, first served)."""
    worker_concurrency: int = 4
    """Jobs one worker process analyses at once."""
    events_max_age: float = 7 * 86400.0
    """How long the events stream keeps events (the WatchJobs resume window), and the outbox
    its published rows: part of the retention (events carry no assessment content)."""
    result_retention: float = 0.0
    """Seconds after its job ended that a result's inputs and profile are kept; the sweep
    erases older ones. 0 (or ``off``) keeps them for ever."""
    db_pool_size: int = 4
    """PostgreSQL connections of one archive process (its pool's maximum). Measured on two
    cores: 4 beat 2, 10 and 20 (more connections only queue inside PostgreSQL)."""
    shutdown_grace: float = 10.0
    """Seconds in-flight RPCs get to finish on SIGTERM."""
    metrics_addr: str = ""
    """host:port for a Prometheus /metrics HTTP endpoint; empty means off."""
    tls_cert: str = ""
    """Path of a PEM certificate: the server's, and the client's for mutual TLS."""
    tls_key: str = ""
    """Path of the PEM private key for ``tls_cert``."""
    tls_ca: str = ""
    """Path of a PEM CA bundle: clients verify servers with it; servers then require client
    certificates."""
    health_addr: str = ""
    """host:port of a plaintext gRPC server of grpc.health.v1 only, beside the service's own
    (TLS) port, for probes that speak no TLS (the kubelet's); empty: none."""
    reflection: bool = True
    """Serve gRPC server reflection (unauthenticated: it lists every RPC and message); the
    prod overlay turns it off."""
    max_queued: float = 600.0
    """A QUEUED job older than this had its queue message lost: the sweep re-publishes it,
    and fails it (refunded) after ASSAY_MAX_ATTEMPTS re-publications."""
    log_level: str = "INFO"
    """Logging level name (DEBUG, INFO, WARNING, ERROR)."""
    log_format: str = "auto"
    """``json`` (one object per line), ``text``, or ``auto``: text on a terminal, else JSON."""
    trace_sample_ratio: float = 1.0
    """Fraction of new traces recorded when tracing is on (OTEL_TRACES_EXPORTER set);
    a trace begun upstream keeps its caller's decision (so 0 records only callers' traces)."""
    bookmark_interval: float = 15.0
    """Seconds between WatchJobs bookmarks (the latest cursor, sent while idle)."""
    watch_buffer: int = 256
    """Events buffered per WatchJobs stream; a subscriber that falls further behind gets
    RESOURCE_EXHAUSTED and resumes from its last cursor."""
    watch_stall_timeout: float = 15.0
    """Seconds a WatchJobs stream with a full buffer waits for its client before ending
    with RESOURCE_EXHAUSTED (the client resumes from its last cursor)."""
    stream_replicas: int = 1
    """JetStream replicas of both streams: 3 on a three-node cluster."""
    analyzer_delay: float = 0.0
    """Test knob: seconds a worker waits, heartbeating, before analysing; 0 in production."""
    stream_prefix: str = ""
    """Namespace for JetStream streams, subjects and consumers; empty in production (the
    contract's names), set per test so tests never share a stream."""
    default_locale: str = DEFAULT_LOCALE
    """The language of a submission's profile when it names none (``id`` or ``en``); a worker
    also writes in it for a queue message from a producer older than locales."""
    data_key_file: str = ""
    """Path of the archive's data keys (one ``<key id> <base64 key>`` a line, the first one
    sealing): users' assessment data, raw answers and profiles are then encrypted at rest
    (AES-GCM, key id stored per row); empty: stored as plain JSON."""
    access_record_retention: float = 400 * 86400.0
    """How long the access record (who read whose data) is kept: the sweep deletes older
    records."""

    def __post_init__(self) -> None:
        if self.lease_timeout <= 0:
            object.__setattr__(self, "lease_timeout", 3 * self.heartbeat_interval)

    @property
    def tier_lanes(self) -> Tiers:
        """``tiers`` parsed (checked when the settings were read)."""
        return Tiers.parse(self.tiers)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, allow_missing_keys: bool = False
    ) -> Settings:
        """Read settings from ``env`` (default ``os.environ``).

        A server needs ``ASSAY_JWKS_FILE`` or ``ASSAY_JWKS_URL`` (clients and the migration pass
        ``allow_missing_keys``). Every malformed variable is reported at once, in one ConfigError.
        """
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        problems: dict[str, str] = {}
        for field in dataclasses.fields(cls):
            var = env_var(field.name)
            raw = source.get(var)
            if raw is None:
                continue
            try:
                values[field.name] = _PARSERS.get(field.name, _parse_str)(raw.strip())
            except (ConfigError, ValueError) as err:
                problems[var] = f"{raw!r} {err}"
        keys_var = env_var("jwks_file")
        if not (allow_missing_keys or values.get("jwks_file") or values.get("jwks_url")):
            problems.setdefault(
                keys_var,
                "must be set, or ASSAY_JWKS_URL (the public keys tokens are verified with)",
            )
        if problems:
            listed = "; ".join(f"{var}: {why}" for var, why in sorted(problems.items()))
            raise ConfigError(f"invalid configuration: {listed}", problems)
        return cls(**values)


def env_var(field_name: str) -> str:
    """Name of the environment variable for a Settings field."""
    return ENV_PREFIX + field_name.upper()


def _parse_str(raw: str) -> str:
    return raw


def _issuers(raw: str) -> str:
    if not [part for part in raw.split(",") if part.strip()]:
        raise ConfigError("must name at least one issuer")
    return raw


def _required(raw: str) -> str:
    if not raw:
        raise ConfigError("must not be empty")
    return raw


def _tiers(raw: str) -> str:
    Tiers.parse(raw)
    return raw


def _positive_duration(raw: str) -> float:
    seconds = parse_duration(raw)
    if seconds <= 0:
        raise ConfigError("must be a positive duration")
    return seconds


def _duration_or_off(raw: str) -> float:
    return 0.0 if raw.strip().lower() in ("off", "") else parse_duration(raw)


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError("not an integer") from None
        if value < minimum:
            raise ConfigError(f"must be ≥ {minimum}")
        return value

    return parse


def _fraction(raw: str, *, zero: bool = False) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError("not a number") from None
    above_floor = value >= 0.0 if zero else value > 0.0
    if not (above_floor and value <= 1.0):  # NaN fails both
        raise ConfigError("must be in [0, 1]" if zero else "must be in (0, 1]")
    return value


def _ratio(raw: str) -> float:
    return _fraction(raw, zero=True)


def _address(optional: bool) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if optional and not raw:
            return raw
        for part in raw.split(","):  # replicas: ip:port,ip:port
            listen_addr(part)  # validates host:port
        return raw

    return parse


def _bool(raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError("not a boolean (true/false)")


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.lower()
        if value not in choices:
            raise ConfigError(f"must be one of {', '.join(choices)}")
        return value

    return parse


def _log_level(raw: str) -> str:
    level = raw.upper()
    if not isinstance(logging.getLevelName(level), int):
        raise ConfigError("unknown log level (DEBUG, INFO, WARNING, ERROR, CRITICAL)")
    return level


_PARSERS: dict[str, Callable[[str], Any]] = {
    "jwt_issuer": _issuers,
    "jwt_audience": _required,
    "jwt_roles_claim": _required,
    "jwt_tier_claim": _required,
    "tiers": _tiers,
    "jwks_refresh": _positive_duration,
    "archive_addr": _address(optional=False),
    "assessment_addr": _address(optional=False),
    "notifier_addr": _address(optional=False),
    "worker_addr": _address(optional=False),
    "metrics_addr": _address(optional=True),
    "health_addr": _address(optional=True),
    "token_cost": _int_at_least(1),
    "heartbeat_interval": _positive_duration,
    "lease_timeout": _positive_duration,
    "stuck_after": _positive_duration,
    "max_processing": _positive_duration,
    "analysis_timeout": _positive_duration,
    "max_attempts": _int_at_least(1),
    "sweep_interval": _positive_duration,
    "sweep_max_fraction": _fraction,
    "max_inflight_per_user": _int_at_least(0),
    "queued_per_user": _int_at_least(0),
    "worker_concurrency": _int_at_least(1),
    "events_max_age": _positive_duration,
    "result_retention": _duration_or_off,
    "shutdown_grace": parse_duration,
    "bookmark_interval": _positive_duration,
    "watch_buffer": _int_at_least(1),
    "watch_stall_timeout": _positive_duration,
    "stream_replicas": _int_at_least(1),
    "db_pool_size": _int_at_least(1),
    "analyzer_delay": parse_duration,
    "log_level": _log_level,
    "log_format": _choice(*LOG_FORMATS),
    "trace_sample_ratio": _ratio,
    "reflection": _bool,
    "max_queued": _positive_duration,
    "default_locale": _choice(*LOCALES),
    "access_record_retention": _positive_duration,
}
