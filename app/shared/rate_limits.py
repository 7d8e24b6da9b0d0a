"""Rate-limit counters in the main database: the `limits` storage for the modes without Redis.

A limit holds only if every API process counts in one place. With Redis as the broker or the
result backend the counters live there; otherwise (the embedded mode, whose processes share one
SQLite file, and PostgreSQL with RabbitMQ and no Redis) they live in this table. One statement
per request counts it and starts a new window when the last one is over.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from limits.storage import Storage
from sqlalchemy import Column, Double, Index, Integer, String, Table, case, delete, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.shared.db.base import MainBase
from app.shared.db.dialects import rowcount, statements

RATE_LIMIT_COUNTERS = Table(
    "rate_limit_counters",
    MainBase.metadata,
    Column("key", String(512), primary_key=True),
    Column("hits", Integer, nullable=False),
    Column("expires_at", Double, nullable=False),  # seconds since the epoch
    Index("ix_rate_limit_counters_expires_at", "expires_at"),
)


class DatabaseStorage(Storage):
    """Fixed windows counted in RATE_LIMIT_COUNTERS through the main database's sessions."""

    STORAGE_SCHEME = ["onlinestudy+database"]
    URI = "onlinestudy+database://"
    # Callers come and go (every address that ever sent a request has a row): the rows of
    # windows long over are deleted now and then by whichever process counts next.
    PRUNE_EVERY_S = 60.0

    def __init__(
        self,
        uri: str | None = None,
        wrap_exceptions: bool = False,
        session: Callable[[], Session] | None = None,
        **options: float | str | bool,
    ):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        if session is None:
            raise ValueError("DatabaseStorage needs the main database's session factory")
        self._session = session
        self._pruned_at = 0.0

    @property
    def base_exceptions(self) -> type[Exception]:
        return SQLAlchemyError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        table = RATE_LIMIT_COUNTERS
        now = time.time()
        over = table.c.expires_at <= now
        with self._session() as session:
            insert = statements(session).upsert(table)
            counted = insert.values(key=key, hits=amount, expires_at=now + expiry)
            counted = counted.on_conflict_do_update(
                index_elements=[table.c.key],
                set_={
                    "hits": case((over, amount), else_=table.c.hits + amount),
                    "expires_at": case((over, now + expiry), else_=table.c.expires_at),
                },
            )
            hits: int = session.execute(counted.returning(table.c.hits)).scalar_one()
            if now - self._pruned_at > self.PRUNE_EVERY_S:
                self._pruned_at = now
                session.execute(delete(table).where(table.c.expires_at < now))
            session.commit()
        return hits

    def get(self, key: str) -> int:
        table = RATE_LIMIT_COUNTERS
        with self._session() as session:
            hits = session.execute(
                select(table.c.hits).where(table.c.key == key, table.c.expires_at > time.time())
            ).scalar()
        return int(hits or 0)

    def get_expiry(self, key: str) -> float:
        table = RATE_LIMIT_COUNTERS
        now = time.time()
        with self._session() as session:
            expires_at = session.execute(
                select(table.c.expires_at).where(table.c.key == key)
            ).scalar()
        return max(float(expires_at or now), now)

    def check(self) -> bool:
        try:
            with self._session() as session:
                session.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    def reset(self) -> int | None:
        with self._session() as session:
            deleted = rowcount(session.execute(delete(RATE_LIMIT_COUNTERS)))
            session.commit()
        return deleted

    def clear(self, key: str) -> None:
        with self._session() as session:
            session.execute(delete(RATE_LIMIT_COUNTERS).where(RATE_LIMIT_COUNTERS.c.key == key))
            session.commit()
