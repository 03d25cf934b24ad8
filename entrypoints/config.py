"""Configuration from the environment, validated once at startup.

An invalid value stops the process with one line naming the variable, the value and what
is allowed (ConfigError); nothing reads os.environ after this module has run.

Longer than most modules: every setting with its default, its parser and what it means,
so the whole configuration reads in one place.
"""

from __future__ import annotations

import math
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from taskforge.adapters.redis.keys import DEFAULT_PREFIX
from taskforge.adapters.telemetry.logging import FORMATS as LOG_FORMATS
from taskforge.adapters.telemetry.logging import LEVELS
from taskforge.adapters.telemetry.tracing import EXPORTERS as TRACING_EXPORTERS
from taskforge.domain.errors import ValidationError
from taskforge.domain.outcome import DEFAULT_MAX_SNOOZES, DEFAULT_UNKNOWN_TYPE_GRACE
from taskforge.domain.policy import MAX_DURATION
from taskforge.domain.validation import DEFAULT_QUEUE, SNOOZE_CAPS, validate_queue_name

T = TypeVar("T")

LOG_LEVELS = tuple(LEVELS)
POSTGRES_POOLERS = ("none", "pgbouncer")
POSTGRES_VARIABLES = (
    "POSTGRES_DSN",
    "POSTGRES_DSN_FILE",
    "POSTGRES_DIRECT_DSN",
    "POSTGRES_DIRECT_DSN_FILE",
    "POSTGRES_POOLER",
)
"""The variables of the Postgres settings (`Settings.postgres_from_env`)."""
MAX_RATE_PER_SEC = 1e9
"""The highest RATE_LIMIT_PER_SEC, and of each queue's rate in QUEUE_RATE_LIMITS."""
MAX_RETENTION_PERIOD = 10 * 365 * 86_400.0
"""The longest RETENTION_PERIOD, in seconds: ten years."""
MAX_EXPORT_DELAY_MS = 3_600_000
"""The longest OTEL_BSP_SCHEDULE_DELAY, in milliseconds: an hour."""
MAX_SPAN_QUEUE_SIZE = 1_000_000
"""The largest OTEL_BSP_MAX_QUEUE_SIZE: finished spans held in memory awaiting export."""
MAX_EXPORT_TIMEOUT_MS = 3_600_000
"""The longest OTEL_BSP_EXPORT_TIMEOUT, in milliseconds: an hour."""
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_ADDR = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9._\-]*)):(?P<port>[0-9]{1,5})$"
)
"""A host name may hold `_`: no DNS name does, but Docker Compose's service names
(`task_redis`) and container names (`app_redis_1`) do, and its resolver finds them."""
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DSN_SCHEMES = ("postgresql://", "postgres://")
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_SSL_CHECKED_MODES = ("require", "verify-ca", "verify-full")
"""The modes under which the driver loads `sslrootcert` (and refuses a missing one)."""
_ADDRESS_EXAMPLES = {"REDIS_ADDR": "localhost:6379", "METRICS_ADDR": ":9100"}
"""The example a refused address is shown with; the others are listen addresses as HTTP_ADDR."""
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,15}")
_URL_PARTS = {
    "REDIS_ADDR": "; the other parts of a Redis URL are settings of their own: REDIS_DB,"
    " REDIS_PASSWORD, REDIS_TLS=true for rediss://",
    "REDIS_SENTINELS": "; the Sentinels' password is a setting of its own: REDIS_SENTINEL_PASSWORD",
}
"""Where the parts of a URL go, for the address settings that are often given one."""
_TOKEN = re.compile(r"[!-~]+")
_SENTINEL_MASTER = re.compile(r"[A-Za-z0-9._\-]{1,128}")
_QUERY_PASSWORD = re.compile(r"(?i)((?:^|&)password=)[^&#]*")
_QUERY_PASSWORD_VALUE = re.compile(r"(?i)[?&]password=([^&#]*)")


class ConfigError(Exception):
    """One readable line: the variable, its value (unless secret) and what is allowed."""

    def __init__(self, variable: str, value: str | None, allowed: str) -> None:
        shown = "" if value is None else f"={value!r}"
        super().__init__(f"invalid configuration: {variable}{shown}: {allowed}")
        self.variable = variable
        self.allowed = allowed


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Every setting of every role. `from_env` reads the spec's variables (POSTGRES_DSN,
    HTTP_ADDR, QUEUE_NAME, REDIS_ADDR, REDIS_DB, REDIS_PASSWORD, LOG_LEVEL, WORKER_CONCURRENCY,
    RATE_LIMIT_PER_SEC, TRACING_ENABLED, TRACING_EXPORTER) and the design's (MAX_PAYLOAD_BYTES,
    API_TOKEN, WORKER_QUEUES, REDIS_SENTINELS, REDIS_TLS, UI_ENABLED, UI_READ_ONLY, ...); the
    field defaults are the documented defaults."""

    postgres_dsn: str | None = field(default=None, repr=False)
    """May carry a password: kept out of repr."""
    postgres_direct_dsn: str | None = field(default=None, repr=False)
    """A session of its own on the server, for what a transaction pooler cannot carry
    (`taskforge migrate`'s advisory lock, creating databases, the scheduler's LISTEN for
    jobs committed in applications' transactions); None means POSTGRES_DSN."""
    postgres_pooler: str = "none"
    """`pgbouncer`: POSTGRES_DSN goes through a pooler in transaction mode, so no statement
    is prepared by name (each is parsed again, unnamed, on every use)."""
    http_addr: Address = field(default_factory=lambda: Address("0.0.0.0", 8080))  # noqa: S104
    queue_name: str = DEFAULT_QUEUE
    redis_addr: Address = field(default_factory=lambda: Address("localhost", 6379))
    redis_db: int = 0
    redis_password: str = field(default="", repr=False)
    redis_sentinels: tuple[Address, ...] = ()
    """Sentinels that name the Redis master (REDIS_SENTINELS); empty: REDIS_ADDR is the server.
    With Sentinels, every role follows a failover to the promoted replica."""
    redis_sentinel_master: str | None = None
    """The master's name in the Sentinels' configuration; set exactly when Sentinels are."""
    redis_sentinel_password: str = field(default="", repr=False)
    """The Sentinels' own password (their `requirepass`), if any."""
    redis_tls: bool = False
    """Connect to Redis (and the Sentinels) over TLS, checking the server's certificate."""
    redis_tls_ca_file: str | None = None
    """A PEM file of the CAs to trust for Redis's certificate; None: the system's CAs."""
    log_level: str = "info"
    log_format: str | None = None
    """`json` or `text`; None (LOG_FORMAT unset) means text on a terminal, else json."""
    worker_concurrency: int = 10
    rate_limit_per_sec: float = 0.0
    """Jobs started per second in each queue not in `queue_rate_limits`; 0: no limit."""
    queue_rate_limits: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    """The queues with a rate of their own (QUEUE_RATE_LIMITS), which replaces
    `rate_limit_per_sec` for them; 0: no limit for that queue."""
    tracing_enabled: bool = False
    tracing_exporter: str = "stdout"
    tracing_export_delay_ms: int = 5000
    """Milliseconds between exports of finished spans (the OpenTelemetry SDK's
    OTEL_BSP_SCHEDULE_DELAY), read here so that a bad value stops the process in one line
    instead of a traceback from the SDK."""
    tracing_max_queue_size: int = 2048
    """Finished spans held for export (OTEL_BSP_MAX_QUEUE_SIZE); past it, the oldest are
    dropped."""
    tracing_max_export_batch_size: int = 512
    """Spans exported at once (OTEL_BSP_MAX_EXPORT_BATCH_SIZE), at most
    `tracing_max_queue_size`: a full batch is exported without waiting for the delay."""
    tracing_export_timeout_ms: int = 30_000
    """Milliseconds an export may take (OTEL_BSP_EXPORT_TIMEOUT)."""
    max_payload_bytes: int = 1024 * 1024
    api_workers: int = 1
    """API processes sharing the listening socket (`taskforge api` only)."""
    api_token: str | None = field(default=None, repr=False)
    """When set, every route except /healthz, /readyz and /metrics needs this bearer token."""
    worker_queues: tuple[str, ...] = ()
    """Queues a worker serves; empty means QUEUE_NAME alone."""
    worker_shutdown_grace: float = 30.0
    worker_heartbeat: bool = True
    scheduler_tick: float = 0.5
    scheduler_batch_size: int = 500
    republish_after: float = 30.0
    retention_period: float = 7 * 24 * 3600.0
    job_timeout: float = 0.0
    """Seconds an attempt may run, for jobs enqueued without a `timeout`; 0: no limit."""
    max_result_bytes: int = 64 * 1024
    """The most a handler's return value may take as JSON; a larger one dead-letters it."""
    max_snoozes: int = DEFAULT_MAX_SNOOZES
    """Snoozes a job may take (taskforge.Snooze); the next one dead-letters it."""
    unknown_type_grace: float = DEFAULT_UNKNOWN_TYPE_GRACE
    """Seconds a job whose type no live worker serving its queue has a handler for is handed
    back, before it is dead-lettered as unknown (0: at once)."""
    handlers: tuple[str, ...] = ()
    demo_handlers: bool = False
    metrics_addr: Address | None = None
    metrics_flush_interval: float = 1.0
    """Seconds between a worker's writes of its metrics to the cluster-wide store; a worker
    that misses three in a row drops out of utilisation."""
    redis_key_prefix: str = DEFAULT_PREFIX
    max_waiting_enqueues: int = 5_000
    """Single enqueues that may wait for the job store at once per API process; one more is
    answered 503 at once."""
    request_deadline: float = 5.0
    """Seconds any API request may take; past it the answer is 503 not_ready (0: none)."""
    http_header_timeout: float = 10.0
    """Seconds a client has to send a request's head, from its first byte."""
    http_body_timeout: float = 30.0
    """Seconds a request body may pause between two reads."""
    http_max_connections: int = 1000
    """Open connections per API process; one more is answered 503 and closed at once."""
    ui_enabled: bool = True
    """Serve the dashboard at /ui (`taskforge api` and `taskforge dev`)."""
    ui_read_only: bool = False
    """The dashboard shows no actions and refuses every one (403)."""
    service_name: str = "taskforge"
    """How this process names itself in traces (`taskforge-worker` ...); set by the role
    being run, not read from the environment."""

    @property
    def queues(self) -> tuple[str, ...]:
        return self.worker_queues or (self.queue_name,)

    def rate_limit_of(self, queue: str) -> float:
        """Jobs of `queue` started per second, shared by its workers; 0: no limit."""
        return self.queue_rate_limits.get(queue, self.rate_limit_per_sec)

    def require_postgres(self, role: str) -> str:
        """The DSN, or ConfigError when the role needs one and none is set."""
        if not self.postgres_dsn:
            raise ConfigError(
                "POSTGRES_DSN",
                None,
                f"not set; required by `taskforge {role}` (e.g. postgresql://user@host/db)",
            )
        return self.postgres_dsn

    def require_direct_postgres(self, role: str) -> str:
        """POSTGRES_DIRECT_DSN, else POSTGRES_DSN; ConfigError when neither is set, and when
        POSTGRES_DSN leads through a transaction pooler: a session-level advisory lock taken
        through it would stay on whichever server session ran it, held after the role ends,
        and every later `taskforge migrate` would wait for it."""
        if self.postgres_direct_dsn:
            return self.postgres_direct_dsn
        dsn = self.require_postgres(role)
        if self.postgres_pooler == "pgbouncer":
            raise ConfigError(
                "POSTGRES_DIRECT_DSN",
                None,
                f"not set; with POSTGRES_POOLER=pgbouncer, `taskforge {role}` needs a direct"
                " (unpooled) URL to Postgres: it holds a session, which a pooler in"
                " transaction mode does not keep",
            )
        return dsn

    @classmethod
    def postgres_from_env(cls, env: Mapping[str, str]) -> Settings:
        """`from_env` reading only the Postgres settings (POSTGRES_VARIABLES), every other
        one at its default: for `taskforge migrate`, which uses nothing else, so a setting
        only the other roles read (REDIS_DB, TASKFORGE_REDIS_PREFIX) does not stop it."""
        return cls.from_env({name: env[name] for name in POSTGRES_VARIABLES if name in env})

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read and validate every variable; an unset or blank one takes its default.
        A secret may come from the file its `_FILE` variable names instead (see `_secret`).
        Raises ConfigError for the first invalid value."""

        def get(name: str, parse: Callable[[str, str], T], default: T) -> T:
            raw = env.get(name)
            return default if raw is None or raw.strip() == "" else parse(name, raw.strip())

        def secret(name: str, parse: Callable[[str, str], T], default: T) -> T:
            source, raw = _secret(env, name)
            return default if raw is None or raw.strip() == "" else parse(source, raw.strip())

        defaults = cls()
        no_sentinels: tuple[Address, ...] = ()
        sentinels = get("REDIS_SENTINELS", _address_list, no_sentinels)
        sentinel_master = get("REDIS_SENTINEL_MASTER", _sentinel_master, None)
        _check_sentinel_settings(env, sentinels, sentinel_master)
        redis_tls = get("REDIS_TLS", parse_bool, False)
        tracing_enabled = get("TRACING_ENABLED", parse_bool, False)

        def traced(name: str, parse: Callable[[str, str], T], default: T) -> T:
            """An OpenTelemetry SDK variable: read with tracing on only. The environment
            may hold one set for other services, which a process not tracing leaves be."""
            return get(name, parse, default) if tracing_enabled else default

        span_queue_size = traced(
            "OTEL_BSP_MAX_QUEUE_SIZE", _int_range(1, MAX_SPAN_QUEUE_SIZE), 2048
        )
        span_batch_size = traced(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", _int_range(1, MAX_SPAN_QUEUE_SIZE), 512
        )
        _check_span_batch_size(span_queue_size, span_batch_size)
        return cls(
            postgres_dsn=secret("POSTGRES_DSN", _dsn, None),
            postgres_direct_dsn=secret("POSTGRES_DIRECT_DSN", _dsn, None),
            postgres_pooler=get("POSTGRES_POOLER", _choice(POSTGRES_POOLERS), "none"),
            http_addr=get("HTTP_ADDR", parse_address, defaults.http_addr),
            queue_name=get("QUEUE_NAME", _queue, defaults.queue_name),
            redis_addr=get("REDIS_ADDR", parse_address, defaults.redis_addr),
            redis_db=get("REDIS_DB", _int_range(0, 2**31 - 1), 0),
            redis_password=_secret(env, "REDIS_PASSWORD")[1] or "",
            redis_sentinels=sentinels,
            redis_sentinel_master=sentinel_master,
            redis_sentinel_password=_secret(env, "REDIS_SENTINEL_PASSWORD")[1] or "",
            redis_tls=redis_tls,
            redis_tls_ca_file=get("REDIS_TLS_CA_FILE", _tls_ca_file(redis_tls), None),
            log_level=get("LOG_LEVEL", _choice(LOG_LEVELS), defaults.log_level),
            log_format=get("LOG_FORMAT", _choice(LOG_FORMATS), None),
            worker_concurrency=get("WORKER_CONCURRENCY", _int_range(1, 10_000), 10),
            rate_limit_per_sec=get("RATE_LIMIT_PER_SEC", _rate, 0.0),
            queue_rate_limits=get("QUEUE_RATE_LIMITS", _queue_rates, MappingProxyType({})),
            tracing_enabled=tracing_enabled,
            tracing_exporter=get("TRACING_EXPORTER", _choice(TRACING_EXPORTERS), "stdout"),
            tracing_export_delay_ms=traced(
                "OTEL_BSP_SCHEDULE_DELAY", _int_range(1, MAX_EXPORT_DELAY_MS), 5000
            ),
            tracing_max_queue_size=span_queue_size,
            tracing_max_export_batch_size=span_batch_size,
            tracing_export_timeout_ms=traced(
                "OTEL_BSP_EXPORT_TIMEOUT", _int_range(1, MAX_EXPORT_TIMEOUT_MS), 30_000
            ),
            max_payload_bytes=get("MAX_PAYLOAD_BYTES", _int_range(1024, 1 << 30), 1024 * 1024),
            api_workers=get("API_WORKERS", _int_range(1, 64), 1),
            api_token=secret("API_TOKEN", _token, None),
            worker_queues=get("WORKER_QUEUES", _queue_list, ()),
            worker_shutdown_grace=get("WORKER_SHUTDOWN_GRACE", _number(0, 86_400), 30.0),
            worker_heartbeat=get("WORKER_HEARTBEAT", parse_bool, True),
            scheduler_tick=get("SCHEDULER_TICK", _number(0.01, 3600), 0.5),
            scheduler_batch_size=get("SCHEDULER_BATCH_SIZE", _int_range(1, 100_000), 500),
            republish_after=get("REPUBLISH_AFTER", _number(0.1, 86_400), 30.0),
            retention_period=get(
                "RETENTION_PERIOD", _number(0, MAX_RETENTION_PERIOD), defaults.retention_period
            ),
            job_timeout=get("JOB_TIMEOUT", _number(0, MAX_DURATION), 0.0),
            max_result_bytes=get("MAX_RESULT_BYTES", _int_range(1, 16 << 20), 64 * 1024),
            max_snoozes=get(
                "MAX_SNOOZES", _int_range(SNOOZE_CAPS[0], SNOOZE_CAPS[-1]), DEFAULT_MAX_SNOOZES
            ),
            unknown_type_grace=get(
                "UNKNOWN_TYPE_GRACE", _number(0, MAX_DURATION), DEFAULT_UNKNOWN_TYPE_GRACE
            ),
            handlers=get("TASKFORGE_HANDLERS", _module_list, ()),
            demo_handlers=get("TASKFORGE_DEMO_HANDLERS", parse_bool, False),
            metrics_addr=get("METRICS_ADDR", parse_address, None),
            metrics_flush_interval=get("METRICS_FLUSH_INTERVAL", _number(0.05, 60), 1.0),
            redis_key_prefix=get("TASKFORGE_REDIS_PREFIX", _prefix, DEFAULT_PREFIX),
            max_waiting_enqueues=get("MAX_WAITING_ENQUEUES", _int_range(1, 10_000_000), 5_000),
            request_deadline=get("REQUEST_DEADLINE", _number(0, 3600), 5.0),
            http_header_timeout=get("HTTP_HEADER_TIMEOUT", _number(0.1, 3600), 10.0),
            http_body_timeout=get("HTTP_BODY_TIMEOUT", _number(0.1, 3600), 30.0),
            http_max_connections=get("HTTP_MAX_CONNECTIONS", _int_range(1, 1_000_000), 1000),
            ui_enabled=get("UI_ENABLED", parse_bool, True),
            ui_read_only=get("UI_READ_ONLY", parse_bool, False),
        )


def _secret(env: Mapping[str, str], name: str) -> tuple[str, str | None]:
    """The variable a secret came from and its value: `name`, or the content of the file
    `name_FILE` names (the Docker and Kubernetes convention; one trailing newline is
    dropped). Both set is a ConfigError naming both; so is a file that cannot be read or
    holds nothing but blanks, naming the variable and the path, never what the file holds:
    a secret that was named but not provisioned must not read as the secret left unset
    (for API_TOKEN_FILE, an API open to all)."""
    file_variable = f"{name}_FILE"
    path = env.get(file_variable, "").strip()
    if not path:
        return name, env.get(name)
    if env.get(name, "").strip():
        raise ConfigError(f"{name} and {file_variable}", None, "both are set; set one or the other")
    try:
        content = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise ConfigError(file_variable, path, f"cannot read the file: {reason}") from None
    if not content.strip():
        raise ConfigError(
            file_variable,
            path,
            f"the file is empty; expected the value of {name} (or unset {file_variable})",
        )
    return file_variable, content.removesuffix("\n").removesuffix("\r")


def _check_sentinel_settings(
    env: Mapping[str, str], sentinels: tuple[Address, ...], master: str | None
) -> None:
    """REDIS_SENTINELS and REDIS_SENTINEL_MASTER come together, and replace REDIS_ADDR."""
    if sentinels and master is None:
        raise ConfigError(
            "REDIS_SENTINEL_MASTER", None, "not set; required with REDIS_SENTINELS (e.g. mymaster)"
        )
    if master is not None and not sentinels:
        raise ConfigError(
            "REDIS_SENTINELS", None, "not set; required with REDIS_SENTINEL_MASTER (host:port,...)"
        )
    if sentinels and env.get("REDIS_ADDR", "").strip():
        raise ConfigError(
            "REDIS_ADDR and REDIS_SENTINELS",
            None,
            "both are set; with Sentinels the master's address comes from them, unset REDIS_ADDR",
        )


def _check_span_batch_size(queue_size: int, batch_size: int) -> None:
    """A batch of spans is taken from the queue, so it is no larger than the queue (the
    OpenTelemetry SDK would stop every role with a traceback)."""
    if batch_size > queue_size:
        raise ConfigError(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE and OTEL_BSP_MAX_QUEUE_SIZE",
            None,
            f"a batch of {batch_size} spans is larger than the queue of {queue_size}; expected"
            " OTEL_BSP_MAX_EXPORT_BATCH_SIZE from 1 to OTEL_BSP_MAX_QUEUE_SIZE"
            " (defaults 512 and 2048)",
        )


def _address_list(name: str, raw: str) -> tuple[Address, ...]:
    """`host:port,host:port`: addresses to connect to, so each names its host."""
    addresses = []
    for item in _items(name, raw, "[host]:port addresses"):
        if "://" in item or "@" in item:
            parse_address(name, item)  # refused without showing the value: see there
        if item.startswith(":"):
            raise ConfigError(name, raw, f"{item!r} names no host; expected host:port,...")
        try:
            addresses.append(parse_address(name, item))
        except ConfigError:
            raise ConfigError(
                name, raw, f"{item!r}: expected [host]:port,... with ports from 1 to 65535"
            ) from None
    if not addresses:
        raise ConfigError(name, raw, "expected [host]:port,... (e.g. sentinel-1:26379)")
    return tuple(addresses)


def _sentinel_master(name: str, raw: str) -> str:
    if not _SENTINEL_MASTER.fullmatch(raw):
        raise ConfigError(
            name, raw, "expected 1-128 letters, digits and . _ - (the name Sentinel monitors)"
        )
    return raw


def _tls_ca_file(tls: bool) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        if not tls:
            raise ConfigError(name, raw, "set, but REDIS_TLS is not true; set REDIS_TLS=true")
        problem = _ca_file_problem(raw)
        if problem is not None:
            raise ConfigError(name, raw, problem)
        return raw

    return parse


def _ca_file_problem(path: str) -> str | None:
    """Why `path` is no PEM file of CA certificates (what TLS would find at each
    connection), or None."""
    if not Path(path).is_file():
        return "no such file; expected a PEM file of CA certificates"
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError:
        return "holds no PEM certificate; expected a PEM file of CA certificates"
    except OSError as exc:
        return f"cannot read the file: {exc.strerror or exc}"
    return None


def parse_address(name: str, raw: str) -> Address:
    """`:8080`, `host:port`, `[::1]:8080`. An empty host means every interface. A URL, or
    any value with an `@`, is refused without being shown: it may hold a password
    (`redis://:secret@cache:6379`, `:secret@cache:6379`)."""
    if "://" in raw or "@" in raw:
        scheme = raw.split("://", 1)[0] if "://" in raw else ""
        given = (
            (f"a {scheme}:// URL" if _URL_SCHEME.fullmatch(scheme) else "a URL")
            if "://" in raw
            else "a value with a user or password (an @)"
        )
        raise ConfigError(
            name,
            None,
            f"expected [host]:port, not {given} (not shown: it may hold a password)"
            + _URL_PARTS.get(name, ""),
        )
    match = _ADDR.match(raw)
    port = int(match["port"]) if match else -1
    if match is None or not 1 <= port <= 65535:
        example = _ADDRESS_EXAMPLES.get(name, ":8080")
        raise ConfigError(
            name, raw, f"expected [host]:port with a port from 1 to 65535, e.g. {example}"
        )
    host = match["v6"] or match["host"] or "0.0.0.0"  # noqa: S104
    return Address(host, port)


def parse_bool(name: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(name, raw, "expected true or false")


def _choice(allowed: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        if raw.lower() not in allowed:
            raise ConfigError(name, raw, f"expected one of {', '.join(allowed)}")
        return raw.lower()

    return parse


def _int_range(low: int, high: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        value = int(raw) if _INTEGER.fullmatch(raw) else low - 1
        if not low <= value <= high:
            raise ConfigError(name, raw, f"expected a whole number from {low} to {high}")
        return value

    return parse


def _number(low: float, high: float) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        value = float(raw) if _DECIMAL.fullmatch(raw) else math.nan
        if not low <= value <= high:
            # In full, as the API states its bounds: 315360000, not 3.1536e+08.
            raise ConfigError(name, raw, f"expected a number from {low:.15g} to {high:.15g}")
        return value

    return parse


def _rate(name: str, raw: str) -> float:
    """Jobs started per second (RATE_LIMIT_PER_SEC and each of QUEUE_RATE_LIMITS); 0: none."""
    return _number(0, MAX_RATE_PER_SEC)(name, raw)


def _dsn(name: str, raw: str) -> str:
    if not raw.startswith(_DSN_SCHEMES):
        # Only the scheme is shown: the rest of a DSN may hold a password.
        scheme = raw.split("://", 1)[0] + "://" if "://" in raw else "no scheme"
        raise ConfigError(
            name,
            None,
            f"expected a postgresql:// URL (e.g. postgresql://user@host/db), got {scheme}",
        )
    problem = _dsn_problem(raw)
    if problem is not None:
        raise ConfigError(name, None, f"malformed URL: {problem} (the value may hold a password)")
    _check_dsn_tls(name, raw)
    return raw


def _dsn_problem(dsn: str) -> str | None:
    """What the driver would refuse in the URL's host list and query, found before any
    connection."""
    try:
        parts = urlsplit(dsn)
    except ValueError as exc:  # "Invalid IPv6 URL": names no part of the value
        return str(exc)
    for host in parts.netloc.rpartition("@")[2].split(","):
        if host.startswith("["):
            port = host.partition("]")[2].removeprefix(":")
        else:
            port = host.rpartition(":")[2] if ":" in host else ""
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            # Not shown: with a `/` in an unescaped password, this "port" is part of it.
            return "a port is not a number from 1 to 65535"
    try:
        parse_qs(parts.query, strict_parsing=True)
    except ValueError:  # the driver's "bad query field", at every connection
        return "a query parameter is not name=value"
    return None


def _check_dsn_tls(name: str, dsn: str) -> None:
    """The DSN's `sslmode` is one the driver knows, and the `sslrootcert` it loads under
    that mode is a PEM file of CA certificates: a ConfigError naming the parameter, not a
    refusal at every connection."""
    query = {key: values[-1] for key, values in parse_qs(urlsplit(dsn).query).items()}
    given = query.get("sslmode")
    mode = None if given is None else given.replace("_", "-")  # the driver takes verify_full
    if mode is not None and mode not in _SSL_MODES:
        raise ConfigError(name, None, f"sslmode={given!r}: expected one of {', '.join(_SSL_MODES)}")
    root = query.get("sslrootcert")
    if root and mode in _SSL_CHECKED_MODES:
        problem = _ca_file_problem(root)
        if problem is not None:
            raise ConfigError(name, None, f"sslrootcert={root!r}: {problem}")


def masked_dsn(dsn: str) -> str:
    """`dsn` with its password (in the user part or a `password=` parameter) shown as ***,
    for messages and logs. Masks too much rather than too little on an odd URL."""
    scheme, separator, rest = dsn.partition("://")
    if not separator:
        return "***"
    head, question, query = rest.partition("?")
    user_info, at, hosts = head.rpartition("@")
    if at and ":" in user_info:
        head = f"{user_info.split(':', 1)[0]}:***@{hosts}"
    query = _QUERY_PASSWORD.sub(r"\1***", query)
    return f"{scheme}://{head}{question}{query}"


def without_password(text: str, dsn: str | None) -> str:
    """`text` (a driver's message, say) with the password of `dsn`, if it appears, masked."""
    if not dsn:
        return text
    user_info = dsn.partition("://")[2].partition("?")[0].rpartition("@")[0]
    secrets = [user_info.partition(":")[2], *_QUERY_PASSWORD_VALUE.findall(dsn)]
    for secret in filter(None, secrets):
        text = text.replace(secret, "***").replace(unquote(secret), "***")
    return text


def _token(name: str, raw: str) -> str:
    if not _TOKEN.fullmatch(raw):
        raise ConfigError(
            name, None, "expected printable ASCII without spaces (the value is secret)"
        )
    return raw


def _queue(name: str, raw: str) -> str:
    try:
        return validate_queue_name(raw, name)
    except ValidationError as exc:
        raise ConfigError(name, raw, exc.message) from None


def _items(name: str, raw: str, what: str) -> list[str]:
    """The comma-separated items of `raw`, at least one: a value of only commas would read
    as the variable left unset (its default), which is surely not what was meant."""
    items = [item for item in (part.strip() for part in raw.split(",")) if item]
    if not items:
        raise ConfigError(name, raw, f"expected {what}, comma separated (or leave it unset)")
    return items


def _queue_list(name: str, raw: str) -> tuple[str, ...]:
    return tuple(_queue(name, item) for item in _items(name, raw, "queue names"))


def _queue_rates(name: str, raw: str) -> Mapping[str, float]:
    """`queue=rate,queue=rate`, blanks around each part allowed: no queue name holds `=`,
    `,` or a blank. A queue given twice is refused rather than one of its rates dropped."""
    rates: dict[str, float] = {}
    for item in _items(name, raw, "queue=rate pairs (e.g. sms=2,mail=50)"):
        queue, equals, rate = (part.strip() for part in item.partition("="))
        if not (equals and queue and rate):
            raise ConfigError(
                name, raw, f"{item!r}: expected queue=rate pairs, comma separated (e.g. sms=2)"
            )
        try:
            validate_queue_name(queue, name)
        except ValidationError as exc:
            raise ConfigError(name, raw, f"queue {queue!r}: {exc.message}") from None
        if queue in rates:
            raise ConfigError(name, raw, f"queue {queue!r} is given twice; give each queue once")
        try:
            rates[queue] = _rate(name, rate)
        except ConfigError as exc:
            raise ConfigError(
                name,
                raw,
                f"queue {queue!r}, rate {rate!r}: {exc.allowed} jobs per second"
                " (0: no limit for the queue)",
            ) from None
    return MappingProxyType(rates)  # Settings are frozen: so is this


_MODULE_NAME = r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*"


def _module_list(name: str, raw: str) -> tuple[str, ...]:
    modules = tuple(_items(name, raw, "importable module names"))
    for module in modules:
        if not re.fullmatch(_MODULE_NAME, module):
            raise ConfigError(
                name,
                raw,
                "expected importable module names, comma separated" + module_name_hint(module),
            )
    return modules


def module_name_hint(path: str) -> str:
    """A hint when `path` looks like a file's path (`myjobs.py`, `./jobs/email.py`): handler
    modules are named as `import` names them, from the folder the process starts in."""
    name = path.removesuffix(".py").removeprefix("./").replace("/", ".").replace("\\", ".")
    if name == path or not re.fullmatch(_MODULE_NAME, name):
        return ""
    return f" (a module's name, as import takes it: {name!r})"


def _prefix(name: str, raw: str) -> str:
    if not re.fullmatch(rf"{re.escape(DEFAULT_PREFIX)}[A-Za-z0-9_.:\-]*", raw):
        raise ConfigError(name, raw, f"expected a key prefix that starts with {DEFAULT_PREFIX!r}")
    return raw if raw.endswith(":") else raw + ":"
