"""What one process of onlinestudy works with: its settings, databases, outbox writer and adapters.

`app.bootstrap.bootstrap()` builds one per process and hands it to whatever runs there: the Flask
app, the Celery app's tasks, the relay or a CLI command. Nothing here is looked up globally.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property

from celery import Celery
from sqlalchemy.orm import Session

from app.config import Settings
from app.evaluation.handlers import EvaluationUnitOfWork
from app.evaluation.score_chain import CeleryScoreChain, make_breaker
from app.learning.handlers import LearningUnitOfWork
from app.messaging import create_celery
from app.notification.handlers import NotificationUnitOfWork
from app.notification.senders import SmsSender
from app.orders.handlers import OrdersUnitOfWork
from app.security import Tokens
from app.shared.db.engine import Database
from app.shared.outbox.backlog import pending_deliveries
from app.shared.outbox.writer import OutboxWriter
from app.shared.uow import UnitOfWork


class Container:
    # Every order asks whether learning is overloaded; the count is kept this long.
    BACKLOG_CACHE_S = 0.5

    def __init__(
        self,
        settings: Settings,
        outbox: OutboxWriter,
        sms_sender: SmsSender,
        learning_consumers: Sequence[str],
    ):
        self.settings = settings
        self.db = Database(settings.database_url, settings.notification_database_url)
        self.outbox = outbox
        self.sms_sender = sms_sender
        self._learning_consumers = list(learning_consumers)
        self._backlog_checked_at = 0.0
        self._backlog = 0

    def main_session(self, autocommit: bool = False) -> Session:
        return self.db.session("main", autocommit)

    def notification_session(self, autocommit: bool = False) -> Session:
        return self.db.session("notification", autocommit)

    def read_session(self) -> Session:
        """A session for reads only: on PostgreSQL each statement on its own, no BEGIN."""
        return self.db.session("main", autocommit=True)

    def main_uow(self) -> UnitOfWork:
        return UnitOfWork(self.main_session, self.outbox)

    def orders_uow(self) -> OrdersUnitOfWork:
        return OrdersUnitOfWork(self.main_session, self.outbox)

    def learning_uow(self) -> LearningUnitOfWork:
        return LearningUnitOfWork(self.main_session, self.outbox)

    def evaluation_uow(self) -> EvaluationUnitOfWork:
        return EvaluationUnitOfWork(self.main_session, self.outbox)

    def notification_uow(self) -> NotificationUnitOfWork:
        # Notification raises no events, so its database has no outbox.
        return NotificationUnitOfWork(
            self.notification_session, self.sms_sender, self.settings.max_attempts
        )

    @cached_property
    def tokens(self) -> Tokens:
        return Tokens(self.settings)

    @cached_property
    def celery(self) -> Celery:
        """The Celery app of this process: the workers register their tasks on it; the API and
        the relay only send by task name."""
        return create_celery()

    @cached_property
    def score_chain(self) -> CeleryScoreChain:
        return CeleryScoreChain(self.celery, self.settings, make_breaker(self.settings))

    def learning_overloaded(self) -> bool:
        """Whether learning has more events accepted and not yet recorded than
        LEARNING_BACKLOG_LIMIT. Counted on the outbox, so the answer is the same on every
        broker; the count is cached briefly."""
        now = time.monotonic()
        if now - self._backlog_checked_at > self.BACKLOG_CACHE_S:
            with self.read_session() as session:
                self._backlog = pending_deliveries(session, self._learning_consumers)
            self._backlog_checked_at = now
        return self._backlog > self.settings.learning_backlog_limit
