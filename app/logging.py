"""JSON logs with structlog; the correlation id of the current request or event rides along,
and the trace id when tracing is on. Phone numbers are masked in every line: structlog's, the
standard library's (Flask's errors), and gunicorn's access and error logs."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from gunicorn.glogging import Logger as GunicornLogger
from structlog.typing import EventDict, WrappedLogger

from app.shared.phone import mask_phones
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
    # 010-1234-5678 -> 010-****-5678, in whatever field it is.
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = mask_phones(value)
    return event_dict


class MaskPhones(logging.Filter):
    """Masks the phone numbers of a standard-library record's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_phones(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class MaskingGunicornLogger(GunicornLogger):
    """gunicorn's logger (`--logger-class app.logging.MaskingGunicornLogger`, set by
    gunicorn.conf.py and `onlinestudy run`): the access log's request line carries the phone
    of GET /sms?phone=... and GET /mypage/<phone>."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            log.addFilter(MaskPhones())


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, MaskPhones) for f in handler.filters):
            handler.addFilter(MaskPhones())
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
