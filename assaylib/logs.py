"""Log lines of every Assay process: one JSON object per line when stderr is not a terminal
(a container, a log shipper, a file), the readable one-line form on a terminal;
``ASSAY_LOG_FORMAT=json|text`` overrides.

A JSON line holds ``time``, ``level``, ``service``, ``logger`` and ``message``, the fields a
call passed with ``extra=`` (``job_id``, ``user_id``, ``attempt``, ``worker_id`` …), the
``trace_id`` and ``span_id`` of the current span when tracing is on, and ``exception``.

Every value a record carries may come from a caller (a request id, a user id from a token, a
job id, a name, an error's text), so both forms bound them in one place: each ``extra=`` value,
each argument of the message, each line of a traceback, cut to ``MAX_FIELD`` characters with
its full length beside it (``bounded``), and the message as a whole to ``MAX_MESSAGE`` for text
a call formatted itself. A refused 3 MiB request id leaves a line of a few hundred bytes.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from opentelemetry import trace

__all__ = ["MAX_FIELD", "JsonFormatter", "TextFormatter", "bounded", "configure_logging"]

MAX_FIELD = 256
"""The most characters of one caller-supplied value a log line holds."""
MAX_MESSAGE = 1024
"""The most characters of a message, its arguments already bounded."""

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _stamp(record: logging.LogRecord) -> str:
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{when}.{int(record.msecs):03d}Z"


def bounded(text: str, limit: int = MAX_FIELD) -> str:
    """``text`` when at most ``limit`` characters, else its start and its full length."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[{len(text)} chars]"


def _bounded_value(value: object) -> object:
    """A value as a log line may hold it: numbers as they are, anything else as bounded text
    (an object whose text is short stays itself, so ``%r`` still shows its repr)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return bounded(value)
    text = str(value)
    return value if len(text) <= MAX_FIELD else bounded(text)


def _message(record: logging.LogRecord) -> str:
    """``record.getMessage()`` with each argument bounded first, then the whole bounded."""
    message = str(record.msg)
    args = record.args
    if args:
        if isinstance(args, dict):
            message %= {key: _bounded_value(value) for key, value in args.items()}
        else:
            message %= tuple(_bounded_value(value) for value in args)
    return bounded(message, MAX_MESSAGE)


def _traceback(formatted: str) -> str:
    """A traceback with each line bounded (an exception's text may quote a request)."""
    return "\n".join(bounded(line, MAX_FIELD * 2) for line in formatted.splitlines())


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: _bounded_value(value)
        for key, value in vars(record).items()
        if key not in _STANDARD_ATTRS and not key.startswith("_")
    }


def _trace_ids() -> dict[str, str]:
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


class TextFormatter(logging.Formatter):
    """One line per record: time, level, service, logger, message, then extras as key=value."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` on one line (a traceback follows on its own lines)."""
        line = (
            f"{_stamp(record)} {record.levelname} {self.service} {record.name}: {_message(record)}"
        )
        fields = {**_extras(record), **_trace_ids()}
        if fields:
            line += " " + " ".join(f"{key}={_quote(value)}" for key, value in fields.items())
        if record.exc_info:
            line += "\n" + _traceback(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback is the ``exception`` field)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON object on one line."""
        entry: dict[str, Any] = {
            "time": _stamp(record),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": _message(record),
            **_extras(record),
            **_trace_ids(),
        }
        if record.exc_info:
            entry["exception"] = _traceback(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


def _quote(value: object) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def configure_logging(service: str, level: str = "INFO", log_format: str = "auto") -> None:
    """Send every log record to stderr, as JSON or text (``auto``: text on a terminal);
    safe to call again."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_assay", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    handler.setFormatter(JsonFormatter(service) if as_json else TextFormatter(service))
    handler._assay = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
