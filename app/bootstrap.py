"""The one place that wires settings, databases, the outbox and adapters together."""

from __future__ import annotations

import threading
import time
from functools import cached_property

from flask import current_app, has_app_context
from sqlalchemy.orm import Session

from app.config import Settings
from app.evaluation.handlers import EvaluationUnitOfWork, ScoreChain
from app.learning.handlers import LearningUnitOfWork
from app.notification.handlers import NotificationUnitOfWork
from app.notification.senders import SmsSender, make_sender
from app.orders.handlers import OrdersUnitOfWork
from app.policies import POLICIES, subscribers
from app.shared.db.engine import Database
from app.shared.outbox.backlog import pending_deliveries
from app.shared.outbox.writer import OutboxWriter
from app.shared.queues import Queue
from app.shared.uow import UnitOfWork


class Container:
    def __init__(self, settings: Settings, sms_sender: SmsSender | None = None):
        self.settings = settings
        self.db = Database(settings.database_url, settings.notification_database_url)
        self.outbox = OutboxWriter(
            subscribers,
            deferred={
                (p.consumer, event_type): settings.score_sync_timeout_s
                for p in POLICIES
                for event_type in p.behind_score_chain
            },
        )
        self.sms_sender = sms_sender or make_sender(
            settings.sms_provider, settings.sms_http_url, settings.sms_http_timeout_s
        )

    def main_session(self, autocommit: bool = False) -> Session:
        return self.db.session("main", autocommit)

    def main_uow(self) -> UnitOfWork:
        return UnitOfWork(self.main_session, self.outbox)

    def orders_uow(self) -> OrdersUnitOfWork:
        return OrdersUnitOfWork(self.main_session, self.outbox)

    def learning_uow(self) -> LearningUnitOfWork:
        return LearningUnitOfWork(self.main_session, self.outbox)

    def evaluation_uow(self) -> EvaluationUnitOfWork:
        return EvaluationUnitOfWork(self.main_session, self.outbox)

    @cached_property
    def tokens(self):
        from app.security import Tokens

        return Tokens(self.settings)

    @cached_property
    def score_chain(self) -> ScoreChain:
        from app.evaluation.score_chain import CeleryScoreChain, make_breaker
        from workers.celery_app import app as celery

        return CeleryScoreChain(celery, self.settings, make_breaker(self.settings))

    _backlog_checked_at = 0.0
    _backlog = 0
    BACKLOG_CACHE_S = 0.5

    def learning_backlog(self) -> int:
        """Events accepted for the learning context and not yet recorded by it (SPEC 7).
        Counted on the outbox, so the answer is the same on every broker; cached briefly
        because every order asks."""
        now = time.monotonic()
        if now - self._backlog_checked_at > self.BACKLOG_CACHE_S:
            consumers = [p.consumer for p in POLICIES if p.queue == Queue.LEARNING]
            with self.main_session(autocommit=True) as session:  # one read: no BEGIN
                self._backlog = pending_deliveries(session, consumers)
            self._backlog_checked_at = now
        return self._backlog

    def notification_uow(self) -> NotificationUnitOfWork:
        # Notification raises no events, so its database has no outbox.
        return NotificationUnitOfWork(lambda: self.db.session("notification"), None)


_process_container: Container | None = None
_lock = threading.Lock()


def container() -> Container:
    """The Flask app's container inside a request, else this process's (workers, relay, CLI)."""
    if has_app_context() and "onlinestudy" in current_app.extensions:
        return current_app.extensions["onlinestudy"]
    global _process_container
    with _lock:
        if _process_container is None:
            _process_container = Container(Settings.from_env())
        return _process_container


def set_process_container(value: Container | None) -> None:
    global _process_container
    _process_container = value
