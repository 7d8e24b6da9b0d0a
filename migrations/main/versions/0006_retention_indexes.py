"""indexes for the retention sweep and for reading the event log order by order

The sweep deletes DONE deliveries by done_at and processed-messages records by processed_at,
oldest first; without an index each batch would scan the table. The event log's index on
order_no grows a second column, sequence: one order's events come back in order, and My
page's rebuild streams the whole log order by order without sorting it.

On PostgreSQL the indexes are built CONCURRENTLY: a year of deliveries takes a while to index,
and the outbox must take writes meanwhile.

Revision ID: 0006
Revises: 0005
"""

import contextlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DONE = sa.text("status = 'DONE'")


def upgrade() -> None:
    with _outside_a_transaction():
        _create("ix_outbox_deliveries_done", "outbox_deliveries", ["done_at"], where=DONE)
        _create("ix_processed_messages_processed_at", "processed_messages", ["processed_at"])
        _create(
            "ix_outbox_events_order_no_sequence", "outbox_events", ["order_no", "sequence"]
        )
        op.drop_index("ix_outbox_events_order_no", "outbox_events", **_concurrently())


def downgrade() -> None:
    with _outside_a_transaction():
        _create("ix_outbox_events_order_no", "outbox_events", ["order_no"])
        op.drop_index("ix_outbox_events_order_no_sequence", "outbox_events", **_concurrently())
        op.drop_index("ix_processed_messages_processed_at", "processed_messages", **_concurrently())
        op.drop_index("ix_outbox_deliveries_done", "outbox_deliveries", **_concurrently())


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _concurrently() -> dict:
    return {"postgresql_concurrently": True} if _postgresql() else {}


def _outside_a_transaction():
    # CREATE INDEX CONCURRENTLY refuses to run inside a transaction block.
    return op.get_context().autocommit_block() if _postgresql() else contextlib.nullcontext()


def _create(name: str, table: str, columns: list[str], where=None) -> None:
    op.create_index(
        name,
        table,
        columns,
        postgresql_where=where,
        sqlite_where=where,
        **_concurrently(),
    )
