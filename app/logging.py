"""JSON logs with structlog; the correlation id of the current request or event rides along,
and the trace id when tracing is on."""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.typing import EventDict, WrappedLogger

from app.shared.tracing import current_trace_id
from app.shared.uow import correlation_id


def _add_correlation_id(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    cid = correlation_id.get()
    if cid:
        event_dict.setdefault("correlation_id", cid)
    trace_id = current_trace_id()  # with tracing on: the log line leads to its trace
    if trace_id:
        event_dict.setdefault("trace_id", trace_id)
    return event_dict


def _mask_phones(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    # 010-1234-5678 -> 010-****-5678: logs are read by more people than the database.
    for key in ("phone", "to"):
        value = event_dict.get(key)
        if isinstance(value, str) and len(value) >= 8:
            event_dict[key] = f"{value[:4]}****{value[-5:]}"
    return event_dict


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _add_correlation_id,
            _mask_phones,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
