"""The composition root: the one place that builds a process's Container from the settings and
the policies table. Each entry point (create_app, the Celery app, the relay, the CLI) calls it
once and passes the result on."""

from __future__ import annotations

from app.config import Settings
from app.container import Container
from app.notification.senders import SmsSender, make_sender
from app.policies import POLICIES, deferred_deliveries, subscribers
from app.shared.outbox.writer import OutboxWriter
from app.shared.queues import Queue


def bootstrap(settings: Settings | None = None, sms_sender: SmsSender | None = None) -> Container:
    settings = settings or Settings.from_env()
    return Container(
        settings,
        OutboxWriter(subscribers, deferred=deferred_deliveries(settings.score_sync_timeout_s)),
        sms_sender or make_sender(settings),
        learning_consumers=[p.consumer for p in POLICIES if p.queue == Queue.LEARNING],
    )
