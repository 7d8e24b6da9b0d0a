"""The one place that wires settings, databases, the outbox and adapters together."""

from __future__ import annotations

import threading

from flask import current_app, has_app_context
from sqlalchemy.orm import Session

from app.config import Settings
from app.learning.handlers import LearningUnitOfWork
from app.notification.handlers import NotificationUnitOfWork
from app.notification.senders import SmsSender, make_sender
from app.orders.handlers import OrdersUnitOfWork
from app.policies import subscribers
from app.shared.db import Database
from app.shared.outbox import OutboxWriter
from app.shared.uow import UnitOfWork


class Container:
    def __init__(self, settings: Settings, sms_sender: SmsSender | None = None):
        self.settings = settings
        self.db = Database(settings.database_url, settings.notification_database_url)
        self.outbox = OutboxWriter(subscribers)
        self.sms_sender = sms_sender or make_sender(
            settings.sms_provider, settings.sms_http_url, settings.sms_http_timeout_s
        )

    def main_session(self) -> Session:
        return self.db.session("main")

    def main_uow(self) -> UnitOfWork:
        return UnitOfWork(self.main_session, self.outbox)

    def orders_uow(self) -> OrdersUnitOfWork:
        return OrdersUnitOfWork(self.main_session, self.outbox)

    def learning_uow(self) -> LearningUnitOfWork:
        return LearningUnitOfWork(self.main_session, self.outbox)

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
