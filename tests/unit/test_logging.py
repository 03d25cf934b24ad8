"""LOG_FORMAT: JSON lines for machines, readable lines for a terminal, the request and trace
ids in both; unset, the format follows whether standard error is a terminal."""

from __future__ import annotations

import io
import json
import logging
import re
import warnings

import pytest
from rich.logging import RichHandler

from taskforge.adapters.telemetry.logging import (
    JsonFormatter,
    LineFormatter,
    TextFormatter,
    configure_logging,
    request_id_var,
    trace_id_var,
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


pytestmark = pytest.mark.usefixtures("restore_root_logger")


def log_access_line() -> None:
    request = request_id_var.set("req-42")
    trace = trace_id_var.set("0af7651916cd43dd8448eb211c80319c")
    try:
        logging.getLogger("taskforge.http.access").info(
            "%s %s %d",
            "GET",
            "/jobs",
            200,
            extra={"method": "GET", "path": "/jobs", "status": 200, "latency_ms": 1.5},
        )
    finally:
        trace_id_var.reset(trace)
        request_id_var.reset(request)


@pytest.mark.parametrize(
    ("log_format", "stream", "formatter"),
    [
        (None, io.StringIO(), JsonFormatter),  # unset, not a terminal: json
        (None, Terminal(), TextFormatter),  # unset, a terminal: rich's columns
        ("json", Terminal(), JsonFormatter),  # asked for json on a terminal
        ("text", Terminal(), TextFormatter),  # asked for text on a terminal
        ("text", io.StringIO(), LineFormatter),  # asked for text in a pipe: plain lines
    ],
)
def test_the_format_follows_log_format_else_the_terminal(
    log_format: str | None, stream: io.StringIO, formatter: type[logging.Formatter]
) -> None:
    configure_logging("info", log_format, stream)

    [handler] = logging.getLogger().handlers
    assert type(handler.formatter) is formatter
    assert isinstance(handler, RichHandler) is (formatter is TextFormatter)


def test_json_lines_carry_the_request_and_trace_ids() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)

    log_access_line()

    line = json.loads(stream.getvalue())
    assert (line["message"], line["status"], line["latency_ms"]) == ("GET /jobs 200", 200, 1.5)
    assert line["request_id"] == "req-42"
    assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c"


def test_text_lines_are_readable_and_carry_the_request_and_trace_ids() -> None:
    stream = io.StringIO()  # not a terminal: plain lines, no colours, no columns
    configure_logging("info", "text", stream)

    log_access_line()

    # One line, its fields beside its time and level: rich's columns wrapped it at 80
    # characters and padded every line with blanks, away from what grep finds.
    [line] = stream.getvalue().splitlines()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 INFO  GET /jobs 200 "
        r"request_id=req-42 trace_id=0af7651916cd43dd8448eb211c80319c latency_ms=1\.5",
        line,
    ), line


def test_a_plain_text_record_stays_one_line_whatever_its_message_holds() -> None:
    stream = io.StringIO()
    configure_logging("info", "text", stream)

    # A handler's error text with line breaks split the record, the second part looking
    # like a record of its own; the level read WARNING where LOG_LEVEL and JSON say warn.
    logging.getLogger("taskforge.worker").warning(
        "job 7 failed: %s", "card declined\n2026-01-01T00:00:00.000+00:00 INFO  forged\r"
    )

    [line] = stream.getvalue().splitlines()
    assert line.endswith(
        " WARN  job 7 failed: card declined\\n2026-01-01T00:00:00.000+00:00 INFO  forged\\r"
    )


def test_a_python_warning_is_one_json_line_like_every_other_record() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("this call is deprecated", FutureWarning, stacklevel=1)

    [line] = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["level"] == "warn"
    assert entry["logger"] == "py.warnings"
    assert "FutureWarning: this call is deprecated" in entry["message"]


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_message_its_arguments_do_not_fit_is_one_line_with_them(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = io.StringIO()
    configure_logging("info", log_format, stream)

    logging.getLogger("handlers.mine").info("%s sent to %s", "job-1")  # one argument short

    written = stream.getvalue()
    told = " ".join(written.split())  # a terminal's text lines wrap a long message
    assert "%s sent to %s (arguments ('job-1',) do not fit it: not enough arguments" in told
    assert "Logging error" not in capsys.readouterr().err
    if log_format == "json":
        [line] = written.splitlines()
        assert json.loads(line)["logger"] == "handlers.mine"


def test_at_debug_the_libraries_internals_stay_out_but_taskforges_lines_come_through() -> None:
    stream = io.StringIO()
    configure_logging("debug", "json", stream)
    try:
        logging.getLogger("dishka.graph_builder.activation").debug("static evaluation ...")
        logging.getLogger("faker.factory").debug("looking for locale en_US ...")
        logging.getLogger("dishka").info("a library's notice")
        logging.getLogger("taskforge.worker").debug("a TaskForge detail")
    finally:
        for library in ("dishka", "faker"):
            logging.getLogger(library).setLevel(logging.NOTSET)

    messages = [json.loads(line)["message"] for line in stream.getvalue().splitlines()]
    assert messages == ["a library's notice", "a TaskForge detail"]
