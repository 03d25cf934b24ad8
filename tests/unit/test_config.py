"""Settings.from_env: every variable's default, valid spellings, and one readable error line
(variable, value, what is allowed) for each invalid value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from taskforge.entrypoints.config import (
    Address,
    ConfigError,
    Settings,
    masked_dsn,
    without_password,
)

ROOT = Path(__file__).resolve().parents[2]

CA_PEM = (
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBkDCCATWgAwIBAgIUHUUmwydZqObf9BrQSSUTjvRYm48wCgYIKoZIzj0EAwIw\n"
    "HDEaMBgGA1UEAwwRVGFza0ZvcmdlIHRlc3QgQ0EwIBcNMjYxMjA3MDIyODQyWhgP\n"
    "MjEyNjExMTMwMjI4NDJaMBwxGjAYBgNVBAMMEVRhc2tGb3JnZSB0ZXN0IENBMFkw\n"
    "EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE0Wzm7yawOFbz+I4/YzUd3MiZoT5Sdi21\n"
    "0kXZmI4Cu+oZcHifnEXQXDlh7Kx6SyzLJv0x2gz+aMG50d6bNpq4rqNTMFEwHQYD\n"
    "VR0OBBYEFI/rLqwqrIdJCiEeUofq8NnC6BtjMB8GA1UdIwQYMBaAFI/rLqwqrIdJ\n"
    "CiEeUofq8NnC6BtjMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSQAwRgIh\n"
    "AOwt1Jj2LkzF9HnkQiuirN04jbCGrvBor59kjxZ3X8tNAiEAmrLWGyQSBFU038MX\n"
    "ZlTt/bF/Yfkc9xXuVQgpg4njiTQ=\n"
    "-----END CERTIFICATE-----\n"
)
"""A self-signed CA certificate (EC P-256): what a CA file holds."""


def test_defaults_are_the_documented_ones() -> None:
    settings = Settings.from_env({})

    assert settings.postgres_dsn is None
    assert settings.http_addr == Address("0.0.0.0", 8080)
    assert settings.queue_name == "jobs:ready"
    assert settings.redis_addr == Address("localhost", 6379)
    assert settings.redis_db == 0
    assert settings.redis_password == ""
    assert settings.log_level == "info"
    assert settings.log_format is None  # text on a terminal, else json
    assert settings.worker_concurrency == 10
    assert settings.rate_limit_per_sec == 0.0
    assert settings.queue_rate_limits == {}  # every queue takes RATE_LIMIT_PER_SEC
    assert settings.tracing_enabled is False
    assert settings.tracing_exporter == "stdout"
    assert settings.tracing_export_delay_ms == 5000  # the OpenTelemetry SDK's default
    assert settings.tracing_max_queue_size == 2048  # as are these three
    assert settings.tracing_max_export_batch_size == 512
    assert settings.tracing_export_timeout_ms == 30_000
    assert settings.max_payload_bytes == 1024 * 1024
    assert settings.api_token is None
    assert settings.queues == ("jobs:ready",)
    assert settings.redis_key_prefix == "taskforge:"
    assert settings.job_timeout == 0.0  # no time limit


def test_from_env_with_no_variables_equals_the_field_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_every_spec_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "POSTGRES_DSN": "postgresql://app:pw@db:5432/taskforge",
            "HTTP_ADDR": "127.0.0.1:9000",
            "QUEUE_NAME": "emails",
            "REDIS_ADDR": "cache:6380",
            "REDIS_DB": "3",
            "REDIS_PASSWORD": "hunter2",
            "LOG_LEVEL": "debug",
            "WORKER_CONCURRENCY": "25",
            "RATE_LIMIT_PER_SEC": "12.5",
            "TRACING_ENABLED": "true",
            "TRACING_EXPORTER": "none",
        }
    )

    assert settings.postgres_dsn == "postgresql://app:pw@db:5432/taskforge"
    assert settings.http_addr == Address("127.0.0.1", 9000)
    assert settings.queue_name == "emails"
    assert settings.redis_addr == Address("cache", 6380)
    assert settings.redis_db == 3
    assert settings.redis_password == "hunter2"
    assert settings.log_level == "debug"
    assert settings.worker_concurrency == 25
    assert settings.rate_limit_per_sec == 12.5
    assert settings.tracing_enabled is True
    assert settings.tracing_exporter == "none"


def test_the_design_variables_are_read() -> None:
    settings = Settings.from_env(
        {
            "MAX_PAYLOAD_BYTES": "2048",
            "API_TOKEN": "t0ken",
            "WORKER_QUEUES": "emails, reports",
            "TASKFORGE_REDIS_PREFIX": "taskforge:staging",
            "METRICS_ADDR": ":9100",
            "METRICS_FLUSH_INTERVAL": "0.5",
            "JOB_TIMEOUT": "90",
            "MAX_SNOOZES": "7",
            "UNKNOWN_TYPE_GRACE": "600",
            "TRACING_ENABLED": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_BSP_MAX_QUEUE_SIZE": "100",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100",
            "OTEL_BSP_EXPORT_TIMEOUT": "2500",
        }
    )

    assert settings.max_payload_bytes == 2048
    assert settings.api_token == "t0ken"
    assert settings.queues == ("emails", "reports")
    assert settings.redis_key_prefix == "taskforge:staging:"
    assert settings.metrics_addr == Address("0.0.0.0", 9100)
    assert settings.metrics_flush_interval == 0.5
    assert settings.job_timeout == 90.0
    assert (settings.max_snoozes, settings.unknown_type_grace) == (7, 600.0)
    assert settings.tracing_export_delay_ms == 200
    assert settings.tracing_max_queue_size == 100
    assert settings.tracing_max_export_batch_size == 100
    assert settings.tracing_export_timeout_ms == 2500


def test_queue_rate_limits_give_the_queues_listed_a_rate_of_their_own() -> None:
    settings = Settings.from_env(
        {"RATE_LIMIT_PER_SEC": "10", "QUEUE_RATE_LIMITS": " sms = 2 ,mail=50.5, internal=0 ,"}
    )

    assert settings.queue_rate_limits == {"sms": 2.0, "mail": 50.5, "internal": 0.0}
    assert settings.rate_limit_of("sms") == 2.0
    assert settings.rate_limit_of("internal") == 0.0  # no limit, whatever RATE_LIMIT_PER_SEC
    assert settings.rate_limit_of("reports") == 10.0  # not listed: RATE_LIMIT_PER_SEC


def test_a_queue_rate_limit_applies_without_a_default_rate() -> None:
    settings = Settings.from_env({"QUEUE_RATE_LIMITS": "eu:sms-1.x=2"})

    assert (settings.rate_limit_of("eu:sms-1.x"), settings.rate_limit_of("mail")) == (2.0, 0.0)


@pytest.mark.parametrize(
    ("env", "batch", "queue"),
    [
        ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4096"}, 4096, 2048),  # the default queue
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "100"}, 512, 100),  # the default batch
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "10", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "11"}, 11, 10),
    ],
)
def test_a_span_batch_larger_than_the_span_queue_is_refused_naming_both(
    env: dict[str, str], batch: int, queue: int
) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({**env, "TRACING_ENABLED": "true"})

    assert raised.value.variable == "OTEL_BSP_MAX_EXPORT_BATCH_SIZE and OTEL_BSP_MAX_QUEUE_SIZE"
    assert f"a batch of {batch} spans is larger than the queue of {queue}" in str(raised.value)


def test_a_span_batch_as_large_as_the_span_queue_is_accepted() -> None:
    settings = Settings.from_env(
        {
            "TRACING_ENABLED": "true",
            "OTEL_BSP_MAX_QUEUE_SIZE": "1",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "1",
        }
    )

    assert (settings.tracing_max_queue_size, settings.tracing_max_export_batch_size) == (1, 1)


def test_with_tracing_off_the_otel_batch_variables_are_not_read() -> None:
    # Set for other services of the platform, they stopped every role of one not tracing
    # (a queue of 256 is smaller than the default batch of 512).
    settings = Settings.from_env(
        {"OTEL_BSP_MAX_QUEUE_SIZE": "256", "OTEL_BSP_SCHEDULE_DELAY": "soon"}
    )

    assert (settings.tracing_max_queue_size, settings.tracing_export_delay_ms) == (2048, 5000)


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("OTEL_BSP_SCHEDULE_DELAY", "0", "whole number from 1 to 3600000"),  # SDK: traceback
        ("OTEL_BSP_SCHEDULE_DELAY", "-5", "whole number from 1"),
        ("OTEL_BSP_SCHEDULE_DELAY", "5s", "whole number from 1"),  # SDK: logs, then 5000
        ("OTEL_BSP_MAX_QUEUE_SIZE", "0", "whole number from 1 to 1000000"),  # SDK: traceback
        ("OTEL_BSP_MAX_QUEUE_SIZE", "1000001", "whole number from 1 to 1000000"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "2k", "whole number from 1"),  # SDK: logs, then 2048
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "0", "whole number from 1"),  # SDK: traceback
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "-1", "whole number from 1"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "all", "whole number from 1"),  # SDK: logs, 512
        ("OTEL_BSP_EXPORT_TIMEOUT", "0", "whole number from 1 to 3600000"),
        ("OTEL_BSP_EXPORT_TIMEOUT", "3600001", "whole number from 1 to 3600000"),
        ("OTEL_BSP_EXPORT_TIMEOUT", "30s", "whole number from 1"),  # SDK: logs, then 30000
    ],
)
def test_with_tracing_on_a_bad_otel_batch_variable_is_named_with_what_is_allowed(
    variable: str, value: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"TRACING_ENABLED": "true", variable: value})

    assert raised.value.variable == variable
    assert f"{variable}={value!r}" in str(raised.value)
    assert allowed in str(raised.value)


def test_snoozes_and_unknown_types_have_their_documented_defaults() -> None:
    settings = Settings.from_env({})

    assert (settings.max_snoozes, settings.unknown_type_grace) == (100, 300.0)


@pytest.mark.parametrize(
    ("raw", "address"),
    [
        (":8080", Address("0.0.0.0", 8080)),  # empty host: every interface
        ("localhost:80", Address("localhost", 80)),
        ("10.0.0.5:65535", Address("10.0.0.5", 65535)),
        ("[::1]:8080", Address("::1", 8080)),
        ("  :8081  ", Address("0.0.0.0", 8081)),  # surrounding spaces ignored
        ("task_api:8080", Address("task_api", 8080)),  # a Docker Compose service's name
    ],
)
def test_http_addr_spellings(raw: str, address: Address) -> None:
    assert Settings.from_env({"HTTP_ADDR": raw}).http_addr == address


def test_a_redis_addr_may_name_a_docker_compose_service_with_an_underscore() -> None:
    # Refused as "expected [host]:port": Compose resolves `task_redis` as any other name.
    settings = Settings.from_env({"REDIS_ADDR": "task_redis:6379"})

    assert settings.redis_addr == Address("task_redis", 6379)


@pytest.mark.parametrize(
    ("raw", "level"), [("debug", "debug"), ("WARN", "warn"), ("Error", "error")]
)
def test_log_level_is_case_insensitive(raw: str, level: str) -> None:
    assert Settings.from_env({"LOG_LEVEL": raw}).log_level == level


@pytest.mark.parametrize(("raw", "log_format"), [("json", "json"), ("TEXT", "text")])
def test_log_format_is_json_or_text_in_any_case(raw: str, log_format: str) -> None:
    assert Settings.from_env({"LOG_FORMAT": raw}).log_format == log_format


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        *[("true", True), ("TRUE", True), ("1", True), ("yes", True), ("on", True)],
        *[("false", False), ("False", False), ("0", False), ("no", False), ("off", False)],
    ],
)
def test_boolean_spellings(raw: str, value: bool) -> None:
    assert Settings.from_env({"TRACING_ENABLED": raw}).tracing_enabled is value


def test_the_dashboard_is_on_and_acts_by_default_and_each_can_be_turned_off() -> None:
    assert (Settings().ui_enabled, Settings().ui_read_only) == (True, False)
    settings = Settings.from_env({"UI_ENABLED": "false", "UI_READ_ONLY": "true"})
    assert (settings.ui_enabled, settings.ui_read_only) == (False, True)
    with pytest.raises(ConfigError, match="UI_READ_ONLY"):
        Settings.from_env({"UI_READ_ONLY": "sometimes"})


@pytest.mark.parametrize("variable", ["HTTP_ADDR", "LOG_LEVEL", "WORKER_CONCURRENCY", "REDIS_DB"])
def test_a_blank_variable_takes_the_default(variable: str) -> None:
    assert Settings.from_env({variable: "  "}) == Settings()


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("HTTP_ADDR", "8080", "[host]:port"),  # no colon
        ("HTTP_ADDR", "localhost", "[host]:port"),
        ("HTTP_ADDR", ":0", "1 to 65535"),
        ("HTTP_ADDR", ":70000", "1 to 65535"),
        ("HTTP_ADDR", "host name:80", "[host]:port"),
        ("REDIS_ADDR", "cache", "[host]:port with a port from 1 to 65535, e.g. localhost:6379"),
        ("METRICS_ADDR", "9100", "e.g. :9100"),
        ("WORKER_CONCURRENCY", "0", "from 1 to"),
        ("WORKER_CONCURRENCY", "-4", "from 1 to"),
        ("WORKER_CONCURRENCY", "ten", "whole number"),
        ("WORKER_CONCURRENCY", "2.5", "whole number"),
        ("WORKER_CONCURRENCY", "1_0", "whole number"),
        ("LOG_LEVEL", "verbose", "debug, info, warn, error"),
        ("LOG_LEVEL", "warning", "debug, info, warn, error"),
        ("LOG_FORMAT", "pretty", "json, text"),
        ("REDIS_DB", "-1", "whole number"),
        ("REDIS_DB", "one", "whole number"),
        ("TRACING_ENABLED", "maybe", "true or false"),
        ("TRACING_ENABLED", "2", "true or false"),
        ("TRACING_EXPORTER", "jaeger", "stdout, none"),
        ("RATE_LIMIT_PER_SEC", "-1", "number from 0"),
        ("RATE_LIMIT_PER_SEC", "nan", "number from 0"),
        ("RATE_LIMIT_PER_SEC", "inf", "number from 0"),
        ("RATE_LIMIT_PER_SEC", "fast", "number from 0 to 1000000000"),
        ("QUEUE_RATE_LIMITS", "sms", "'sms': expected queue=rate pairs, comma separated"),
        ("QUEUE_RATE_LIMITS", "sms:2", "expected queue=rate pairs"),
        ("QUEUE_RATE_LIMITS", "sms=", "expected queue=rate pairs"),
        ("QUEUE_RATE_LIMITS", "=2", "expected queue=rate pairs"),
        ("QUEUE_RATE_LIMITS", ",", "queue=rate pairs (e.g. sms=2,mail=50), comma separated"),
        ("QUEUE_RATE_LIMITS", "my sms=2", "queue 'my sms': must be 1-128 characters"),
        ("QUEUE_RATE_LIMITS", "taskforge:sms=2", "reserved"),
        ("QUEUE_RATE_LIMITS", "sms=2,mail=-1", "queue 'mail', rate '-1': expected a number"),
        ("QUEUE_RATE_LIMITS", "sms=nan", "number from 0 to 1000000000 jobs per second"),
        ("QUEUE_RATE_LIMITS", "sms=inf", "number from 0 to 1000000000"),
        ("QUEUE_RATE_LIMITS", "sms=2e9", "number from 0 to 1000000000"),  # RATE_LIMIT_PER_SEC's
        ("QUEUE_RATE_LIMITS", "sms=2/s", "number from 0"),
        ("QUEUE_RATE_LIMITS", "sms=2=3", "rate '2=3'"),
        ("QUEUE_RATE_LIMITS", "sms=2,sms=3", "queue 'sms' is given twice"),
        ("QUEUE_NAME", "taskforge:jobs", "reserved"),
        ("QUEUE_NAME", "my queue", "letters, digits"),
        ("MAX_PAYLOAD_BYTES", "10", "from 1024"),
        ("WORKER_HEARTBEAT", "sometimes", "true or false"),
        ("TASKFORGE_REDIS_PREFIX", "other:", "taskforge:"),
        ("TASKFORGE_HANDLERS", "my-module", "module names"),
        ("TASKFORGE_HANDLERS", ",", "importable module names, comma separated"),
        ("TASKFORGE_HANDLERS", "./jobs/email.py", "as import takes it: 'jobs.email')"),
        ("TASKFORGE_HANDLERS", "jobs/email", "as import takes it: 'jobs.email')"),
        ("WORKER_QUEUES", ", ,", "queue names, comma separated"),  # not the default queue
        ("METRICS_FLUSH_INTERVAL", "0", "number from 0.05 to 60"),
        ("JOB_TIMEOUT", "-1", "number from 0 to 315360000"),  # as the API states it
        ("RETENTION_PERIOD", "7d", "number from 0 to 315360000"),
        ("MAX_SNOOZES", "-1", "whole number"),
        ("UNKNOWN_TYPE_GRACE", "soon", "number from 0"),
        ("REDIS_SENTINELS", "sentinel-1", "[host]:port"),
        ("REDIS_SENTINELS", ":26379", "names no host"),
        ("REDIS_SENTINELS", "s1:26379,s2", "[host]:port"),
        ("REDIS_SENTINELS", ",", "[host]:port addresses, comma separated"),
        ("REDIS_SENTINEL_MASTER", "my master", "letters, digits"),
        ("REDIS_TLS", "maybe", "true or false"),
    ],
)
def test_an_invalid_value_names_the_variable_the_value_and_what_is_allowed(
    variable: str, value: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({variable: value})

    message = str(raised.value)
    assert raised.value.variable == variable
    assert f"{variable}={value!r}" in message
    assert allowed in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("variable", "value", "url"),
    [
        ("REDIS_ADDR", "redis://:secret-pw@cache:6379/2", "redis://"),
        ("REDIS_ADDR", "rediss://default:secret-pw@cache:6380", "rediss://"),
        ("REDIS_ADDR", "unix:///run/redis.sock", "unix://"),
    ],
)
def test_a_redis_url_is_refused_naming_the_settings_of_its_parts_without_echoing_it(
    variable: str, value: str, url: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({variable: value})

    assert raised.value.variable == variable
    assert str(raised.value) == (
        f"invalid configuration: {variable}: expected [host]:port, not a {url} URL (not shown:"
        " it may hold a password); the other parts of a Redis URL are settings of their own:"
        " REDIS_DB, REDIS_PASSWORD, REDIS_TLS=true for rediss://"
    )


@pytest.mark.parametrize(
    ("variable", "value", "given", "setting"),
    [
        ("REDIS_SENTINELS", "s1:26379,redis://:secret-pw@s2:26379", "a redis:// URL", "Sentinel"),
        # Without a scheme, these were echoed whole in "expected [host]:port".
        ("REDIS_ADDR", ":secret-pw@cache:6379", "a value with a user or password", "Redis URL"),
        ("REDIS_ADDR", "default:secret-pw@cache:6379", "a value with a user or", "Redis URL"),
        ("REDIS_SENTINELS", "s1:26379,:secret-pw@s2:26379", "a value with a user", "Sentinel"),
    ],
)
def test_an_address_that_may_hold_a_password_is_refused_without_echoing_it(
    variable: str, value: str, given: str, setting: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({variable: value})

    assert raised.value.variable == variable
    assert "secret-pw" not in str(raised.value)
    assert f"expected [host]:port, not {given}" in str(raised.value)
    assert setting in str(raised.value)


def test_a_listen_address_given_as_a_url_is_refused_as_one() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"HTTP_ADDR": "http://0.0.0.0:8080"})

    assert str(raised.value) == (
        "invalid configuration: HTTP_ADDR: expected [host]:port, not a http:// URL (not shown:"
        " it may hold a password)"
    )


@pytest.mark.parametrize(
    "dsn", ["mysql://root:secret-pw@db/app", "host=db password=secret-pw", "secret-pw"]
)
def test_a_bad_postgres_dsn_is_refused_without_echoing_it(dsn: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"POSTGRES_DSN": dsn})

    assert raised.value.variable == "POSTGRES_DSN"
    assert "postgresql://" in str(raised.value)
    assert "secret-pw" not in str(raised.value)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://app:secret-pw@db:notaport/app",  # asyncpg: "invalid literal for int()"
        "postgresql://app:secret/pw@db:5432/app",  # an unescaped `/` ends the host part early
        "postgres://app:secret-pw@[::1/app",  # an unclosed IPv6 bracket
        "postgresql://app:secret-pw@db:99999/app",  # a port past 65535
    ],
)
def test_a_malformed_postgres_dsn_is_refused_at_start_without_echoing_it(dsn: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"POSTGRES_DSN": dsn})

    assert raised.value.variable == "POSTGRES_DSN"
    assert "malformed" in str(raised.value)
    assert "secret" not in str(raised.value)


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        ("postgresql://app:s3cret@db:5432/app", "postgresql://app:***@db:5432/app"),
        ("postgresql://app:s3/cr@et@db/app", "postgresql://app:***@db/app"),
        (
            "postgresql://app@db/app?password=s3cret&ssl=1",
            "postgresql://app@db/app?password=***&ssl=1",
        ),
        ("postgresql://db/app", "postgresql://db/app"),
    ],
)
def test_a_dsn_is_shown_with_its_password_masked(dsn: str, masked: str) -> None:
    assert masked_dsn(dsn) == masked
    assert "s3" not in without_password(f"a driver quoting {dsn}", dsn)


@pytest.mark.parametrize("dsn", ["postgresql://u@h/db", "postgres://u:p@h:5433/db?sslmode=require"])
def test_postgres_dsn_urls_are_accepted(dsn: str) -> None:
    assert Settings.from_env({"POSTGRES_DSN": dsn}).postgres_dsn == dsn


@pytest.mark.parametrize("token", ["has space", "tab\tinside", "caf\u00e9"])
def test_an_api_token_that_cannot_travel_in_a_header_is_refused_without_echoing_it(
    token: str,
) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"API_TOKEN": token})

    assert raised.value.variable == "API_TOKEN"
    assert token not in str(raised.value)


@pytest.mark.parametrize("role", ["api", "worker", "scheduler", "migrate"])
def test_a_role_that_needs_postgres_names_the_missing_dsn(role: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({}).require_postgres(role)

    assert raised.value.variable == "POSTGRES_DSN"
    assert f"taskforge {role}" in str(raised.value)


def test_secrets_stay_out_of_the_settings_repr() -> None:
    settings = Settings.from_env(
        {
            "POSTGRES_DSN": "postgresql://app:dsn-secret@db/app",
            "REDIS_PASSWORD": "redis-secret",
            "API_TOKEN": "token-secret",
            "REDIS_SENTINELS": "s1:26379",
            "REDIS_SENTINEL_MASTER": "mymaster",
            "REDIS_SENTINEL_PASSWORD": "sentinel-secret",
        }
    )

    assert "secret" not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "content", "field", "expected"),
    [
        # the trailing newline an editor or `echo` leaves is not part of the secret
        (
            "POSTGRES_DSN",
            "postgresql://app:s3cret@db/app\n",
            "postgres_dsn",
            "postgresql://app:s3cret@db/app",
        ),
        (
            "POSTGRES_DIRECT_DSN",
            "postgresql://app:s3cret@db:5432/app",
            "postgres_direct_dsn",
            "postgresql://app:s3cret@db:5432/app",
        ),
        ("REDIS_PASSWORD", "pa ss word\n", "redis_password", "pa ss word"),
        ("API_TOKEN", "token-from-a-file\n", "api_token", "token-from-a-file"),
        ("REDIS_SENTINEL_PASSWORD", "sentinel-pw\n", "redis_sentinel_password", "sentinel-pw"),
    ],
)
def test_a_secret_is_read_from_the_file_its_file_variable_names(
    tmp_path: Path, variable: str, content: str, field: str, expected: str
) -> None:
    secret = tmp_path / "secret"
    secret.write_text(content)

    settings = Settings.from_env({f"{variable}_FILE": str(secret)})

    assert getattr(settings, field) == expected


@pytest.mark.parametrize(
    "variable", ["POSTGRES_DSN", "REDIS_PASSWORD", "API_TOKEN", "REDIS_SENTINEL_PASSWORD"]
)
def test_a_secret_set_both_directly_and_from_a_file_is_refused_naming_both(
    tmp_path: Path, variable: str
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("postgresql://app:from-file@db/app")

    with pytest.raises(ConfigError) as raised:
        Settings.from_env(
            {variable: "postgresql://app:direct@db/app", f"{variable}_FILE": str(secret)}
        )

    message = str(raised.value)
    assert f"{variable} and {variable}_FILE" in message
    assert "from-file" not in message
    assert "direct" not in message


def test_an_unreadable_secret_file_is_named_with_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-secret"

    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"API_TOKEN_FILE": str(missing)})

    assert raised.value.variable == "API_TOKEN_FILE"
    assert str(missing) in str(raised.value)
    assert "No such file" in str(raised.value)


@pytest.mark.parametrize(
    "variable", ["POSTGRES_DSN", "POSTGRES_DIRECT_DSN", "REDIS_PASSWORD", "API_TOKEN"]
)
@pytest.mark.parametrize(
    "content",
    [
        "",  # a secret mounted before it was filled in
        "\n",
        "  \n",
    ],
)
def test_an_empty_secret_file_is_refused_not_read_as_the_secret_left_unset(
    tmp_path: Path, variable: str, content: str
) -> None:
    # For API_TOKEN_FILE, reading it as unset would leave the API open to all.
    secret = tmp_path / "secret"
    secret.write_text(content)

    with pytest.raises(ConfigError) as raised:
        Settings.from_env({f"{variable}_FILE": str(secret)})

    assert raised.value.variable == f"{variable}_FILE"
    assert str(raised.value) == (
        f"invalid configuration: {variable}_FILE={str(secret)!r}: the file is empty;"
        f" expected the value of {variable} (or unset {variable}_FILE)"
    )


def test_an_invalid_secret_from_a_file_names_the_file_variable_not_the_content(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "dsn"
    secret.write_text("mysql://app:s3cret@db/app")

    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"POSTGRES_DSN_FILE": str(secret)})

    assert raised.value.variable == "POSTGRES_DSN_FILE"
    assert "s3cret" not in str(raised.value)


def test_the_direct_dsn_defaults_to_the_pooled_one() -> None:
    pooled = Settings.from_env({"POSTGRES_DSN": "postgresql://app@pooler:6432/app"})
    both = Settings.from_env(
        {
            "POSTGRES_DSN": "postgresql://app@pooler:6432/app",
            "POSTGRES_DIRECT_DSN": "postgresql://app@db:5432/app",
            "POSTGRES_POOLER": "PgBouncer",
        }
    )

    assert pooled.require_direct_postgres("migrate") == "postgresql://app@pooler:6432/app"
    assert pooled.postgres_pooler == "none"
    assert both.require_direct_postgres("migrate") == "postgresql://app@db:5432/app"
    assert both.postgres_pooler == "pgbouncer"


def test_the_postgres_settings_alone_leave_out_what_only_the_other_roles_read(
    tmp_path: Path,
) -> None:
    # What `taskforge migrate` reads: a Redis setting the roles refuse does not stop it.
    direct = tmp_path / "direct-dsn"
    direct.write_text("postgresql://app:s3cret@db:5432/app\n")
    env = {
        "POSTGRES_DSN": "postgresql://app@pooler:6432/app",
        "POSTGRES_DIRECT_DSN_FILE": str(direct),
        "POSTGRES_POOLER": "pgbouncer",
        "TASKFORGE_REDIS_PREFIX": "other:",
        "REDIS_DB": "x",
        "HTTP_ADDR": "8080",
    }

    settings = Settings.postgres_from_env(env)

    assert settings.postgres_dsn == "postgresql://app@pooler:6432/app"
    assert settings.require_direct_postgres("migrate") == "postgresql://app:s3cret@db:5432/app"
    assert settings.postgres_pooler == "pgbouncer"
    assert settings.redis_key_prefix == Settings().redis_key_prefix


def test_the_postgres_settings_alone_are_still_checked() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.postgres_from_env({"POSTGRES_DSN": "mysql://app@db/app", "REDIS_DB": "x"})

    assert raised.value.variable == "POSTGRES_DSN"


@pytest.mark.parametrize("role", ["migrate", "bench"])
def test_a_role_that_holds_a_session_refuses_a_pooler_without_a_direct_dsn(role: str) -> None:
    # Through a transaction pooler, migrate's session advisory lock would stay on a pooled
    # server session after migrate ends, and every later migrate would wait for it.
    settings = Settings.from_env(
        {"POSTGRES_DSN": "postgresql://app@pooler:6432/app", "POSTGRES_POOLER": "pgbouncer"}
    )

    with pytest.raises(ConfigError) as raised:
        settings.require_direct_postgres(role)

    assert raised.value.variable == "POSTGRES_DIRECT_DSN"
    assert str(raised.value) == (
        "invalid configuration: POSTGRES_DIRECT_DSN: not set; with POSTGRES_POOLER=pgbouncer,"
        f" `taskforge {role}` needs a direct (unpooled) URL to Postgres: it holds a session,"
        " which a pooler in transaction mode does not keep"
    )


def test_redis_sentinels_and_their_master_are_read() -> None:
    settings = Settings.from_env(
        {
            "REDIS_SENTINELS": "sentinel-1:26379, 10.0.0.7:26380,[::1]:26381",
            "REDIS_SENTINEL_MASTER": "taskforge-main",
            "REDIS_SENTINEL_PASSWORD": "sentinel-pw",
        }
    )

    assert settings.redis_sentinels == (
        Address("sentinel-1", 26379),
        Address("10.0.0.7", 26380),
        Address("::1", 26381),
    )
    assert settings.redis_sentinel_master == "taskforge-main"
    assert settings.redis_sentinel_password == "sentinel-pw"


@pytest.mark.parametrize(
    ("env", "named", "allowed"),
    [
        ({"REDIS_SENTINELS": "s1:26379"}, "REDIS_SENTINEL_MASTER", "required with REDIS_SENTINELS"),
        ({"REDIS_SENTINEL_MASTER": "mymaster"}, "REDIS_SENTINELS", "required with"),
        (
            {
                "REDIS_SENTINELS": "s1:26379",
                "REDIS_SENTINEL_MASTER": "mymaster",
                "REDIS_ADDR": "cache:6379",
            },
            "REDIS_ADDR and REDIS_SENTINELS",
            "both are set",
        ),
    ],
)
def test_sentinel_settings_come_together_and_replace_redis_addr(
    env: dict[str, str], named: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)

    assert raised.value.variable == named
    assert allowed in str(raised.value)


def test_redis_tls_and_its_ca_file_are_read(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(CA_PEM)

    settings = Settings.from_env({"REDIS_TLS": "true", "REDIS_TLS_CA_FILE": str(ca)})

    assert settings.redis_tls is True
    assert settings.redis_tls_ca_file == str(ca)
    assert Settings.from_env({}).redis_tls is False


def test_a_redis_tls_ca_file_without_redis_tls_is_refused(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(CA_PEM)

    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"REDIS_TLS_CA_FILE": str(ca)})

    assert raised.value.variable == "REDIS_TLS_CA_FILE"
    assert "REDIS_TLS is not true" in str(raised.value)


def test_a_missing_redis_tls_ca_file_is_named_with_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"

    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"REDIS_TLS": "on", "REDIS_TLS_CA_FILE": str(missing)})

    assert raised.value.variable == "REDIS_TLS_CA_FILE"
    assert str(missing) in str(raised.value)
    assert "no such file" in str(raised.value)


def test_a_redis_tls_ca_file_without_a_certificate_is_refused(tmp_path: Path) -> None:
    # Else every connection fails the same way ("no certificate or crl found"), for good.
    key = tmp_path / "server.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nMIGHAgEA\n-----END PRIVATE KEY-----\n")

    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"REDIS_TLS": "true", "REDIS_TLS_CA_FILE": str(key)})

    assert str(raised.value) == (
        f"invalid configuration: REDIS_TLS_CA_FILE={str(key)!r}: holds no PEM certificate;"
        " expected a PEM file of CA certificates"
    )


@pytest.mark.parametrize(
    ("query", "allowed"),
    [
        ("sslmode=verified", "sslmode='verified': expected one of disable, allow,"),
        ("sslmode=require&sslrootcert=MISSING", "sslrootcert='MISSING': no such file"),
        ("sslmode=verify-full&sslrootcert=NOT_PEM", "sslrootcert='NOT_PEM': holds no PEM"),
        ("sslmode", "malformed URL: a query parameter is not name=value"),
    ],
)
def test_a_dsn_tls_setting_the_driver_would_refuse_is_refused_at_start(
    tmp_path: Path, query: str, allowed: str
) -> None:
    missing, not_pem = tmp_path / "missing.pem", tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    query = query.replace("MISSING", str(missing)).replace("NOT_PEM", str(not_pem))
    allowed = allowed.replace("MISSING", str(missing)).replace("NOT_PEM", str(not_pem))

    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"POSTGRES_DSN": f"postgresql://app:secret-pw@db/app?{query}"})

    assert raised.value.variable == "POSTGRES_DSN"
    assert allowed in str(raised.value)
    assert "secret-pw" not in str(raised.value)


def test_a_dsn_with_tls_settings_the_driver_takes_is_accepted(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(CA_PEM)
    dsns = [
        f"postgresql://app@db/app?sslmode=verify-full&sslrootcert={ca}",
        "postgresql://app@db/app?sslmode=require",
        f"postgresql://app@db/app?sslmode=verify_full&sslrootcert={ca}",  # asyncpg's spelling too
        # Not loaded under `prefer` (the default), so not checked either.
        f"postgresql://app@db/app?sslrootcert={tmp_path / 'missing.pem'}",
    ]

    for dsn in dsns:
        assert Settings.from_env({"POSTGRES_DSN": dsn}).postgres_dsn == dsn


def test_an_unknown_pooler_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"POSTGRES_POOLER.*none, pgbouncer"):
        Settings.from_env({"POSTGRES_POOLER": "pgpool"})


def run_taskforge(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    program = "from taskforge.entrypoints.cli import main; main()"
    clean = {key: value for key, value in os.environ.items() if key not in _SETTINGS_VARIABLES}
    return subprocess.run(
        [sys.executable, "-c", program, *args],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


_SETTINGS_VARIABLES = {
    "POSTGRES_DSN",
    "HTTP_ADDR",
    "QUEUE_NAME",
    "REDIS_ADDR",
    "REDIS_DB",
    "REDIS_PASSWORD",
    "LOG_LEVEL",
    "WORKER_CONCURRENCY",
    "RATE_LIMIT_PER_SEC",
    "QUEUE_RATE_LIMITS",
    "TRACING_ENABLED",
    "TRACING_EXPORTER",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_EXPORT_TIMEOUT",
    "API_TOKEN",
    "POSTGRES_DSN_FILE",
    "POSTGRES_DIRECT_DSN",
    "POSTGRES_POOLER",
    "REDIS_PASSWORD_FILE",
    "API_TOKEN_FILE",
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"POSTGRES_DSN": "postgresql://u@127.0.0.1:1/db", "LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"POSTGRES_DSN": "postgresql://u@127.0.0.1:1/db", "HTTP_ADDR": "8080"}, "HTTP_ADDR"),
        ({"POSTGRES_DSN": "postgresql://u@127.0.0.1:1/db", "REDIS_DB": "x"}, "REDIS_DB"),
        ({}, "POSTGRES_DSN"),
        (
            {
                "POSTGRES_DSN": "postgresql://u@127.0.0.1:1/db",
                "API_TOKEN": "t",
                "API_TOKEN_FILE": "/nonexistent/token",
            },
            "API_TOKEN and API_TOKEN_FILE",
        ),
        ({"POSTGRES_DSN_FILE": "/nonexistent/dsn"}, "POSTGRES_DSN_FILE='/nonexistent/dsn'"),
    ],
)
def test_taskforge_api_with_bad_config_exits_with_one_line_naming_the_variable(
    env: dict[str, str], variable: str
) -> None:
    result = run_taskforge("api", env=env)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_migrate_behind_a_pooler_without_a_direct_dsn_exits_with_one_line() -> None:
    result = run_taskforge(
        "migrate",
        env={"POSTGRES_DSN": "postgresql://u@127.0.0.1:1/db", "POSTGRES_POOLER": "pgbouncer"},
    )

    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("taskforge: invalid configuration: POSTGRES_DIRECT_DSN: not set;")


@pytest.mark.slow
def test_migrate_is_not_stopped_by_a_setting_only_the_other_roles_read() -> None:
    result = run_taskforge(
        "migrate",
        env={"POSTGRES_DSN": "postgresql://u@127.0.0.1:1/db", "TASKFORGE_REDIS_PREFIX": "trialx:"},
    )

    assert result.returncode == 1  # it tried the database, which is not there
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("taskforge migrate: cannot use postgresql://u@127.0.0.1:1/db: "), line


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("worker", "--concurrency", "0"), "--concurrency='0'"),
        (("worker", "--concurrency", "abc"), "--concurrency='abc'"),
        # not rounded to a whole number of slots: refused, as WORKER_CONCURRENCY=2.5 is
        (("worker", "--concurrency", "2.5"), "--concurrency='2.5'"),
        (("worker", "--queues", ""), "--queues=''"),
        (("worker", "--queues", " , "), "--queues=' , '"),
        (("worker", "--queues", "taskforge:x"), "--queues='taskforge:x'"),
        (("scheduler", "--handlers", "not a module"), "--handlers='not a module'"),
        (("dev", "--handlers", ""), "--handlers=''"),
        (("dev", "--addr", ""), "--addr=''"),
    ],
)
def test_a_bad_or_empty_option_is_named_as_given_not_as_its_variable(
    args: tuple[str, ...], named: str
) -> None:
    # An empty option would read as the variable unset: the default, silently.
    result = run_taskforge(*args, env={"POSTGRES_DSN": "postgresql://u@127.0.0.1:1/db"})

    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == result.stderr.strip().splitlines()[0]
    assert f"invalid configuration: {named}: " in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("bogus",), 'taskforge: Unknown command "bogus". Available commands: dev, api,'),
        (("dev", "--bogus"), "taskforge: Unknown option: --bogus. (see --help)"),
        # Other servers' way to say where to listen leads to this one's.
        (
            ("dev", "--port=9000"),
            "taskforge: Unknown option: --port=9000. (see --help); taskforge dev listens on --addr"
            " HOST:PORT (as --addr 127.0.0.1:9000)",
        ),
        (
            ("api", "-p", "9000"),
            "taskforge: Unknown option: -p. (see --help); taskforge api listens on"
            " HTTP_ADDR (as HTTP_ADDR=0.0.0.0:9000 taskforge api)",
        ),
        (("bench", "--runs", "0"), 'taskforge: Invalid value "0" for --runs. Must be >= 1.'),
        # not rounded to 2, as the option parser would
        (
            ("bench", "--runs", "1.5"),
            "taskforge: Invalid value for --runs: must be a whole number, not '1.5'",
        ),
        # RETENTION_PERIOD of the soak's processes: beyond its range they would not start
        (
            ("bench", "--soak", "1m", "--soak-retention", "inf"),
            'taskforge: Invalid value "inf" for --soak-retention. Must be <= 315360000',
        ),
        (("migrate", "extra"), "taskforge: Unused Tokens: ['extra']. (see --help)"),
    ],
)
def test_a_command_or_option_taskforge_cannot_read_is_one_line_and_exit_2(
    args: tuple[str, ...], line: str
) -> None:
    # As a bad setting is: one line a log collector keeps whole, not a box drawn on stderr.
    result = run_taskforge(*args, env={"POSTGRES_DSN": "postgresql://u@127.0.0.1:1/db"})

    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    [shown] = result.stderr.splitlines()
    assert shown.startswith(line), shown
