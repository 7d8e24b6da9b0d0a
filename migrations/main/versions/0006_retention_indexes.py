"""indexes for the retention sweep and for reading the event log order by order

The sweep deletes DONE deliveries by done_at and processed-messages records by processed_at,
oldest first; without an index each batch would scan the table. The event log's index on
order_no grows a second column, sequence: one order's events come back in order, and My
page's rebuild streams the whole log order by order without sorting it.

On PostgreSQL the indexes are built CONCURRENTLY: a year of deliveries takes a while to index.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

from app.migrate import create_index_concurrently, drop_index_concurrently

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_index_concurrently(
        "ix_outbox_deliveries_done", "outbox_deliveries", ["done_at"], where="status = 'DONE'"
    )
    create_index_concurrently(
        "ix_processed_messages_processed_at", "processed_messages", ["processed_at"]
    )
    create_index_concurrently(
        "ix_outbox_events_order_no_sequence", "outbox_events", ["order_no", "sequence"]
    )
    drop_index_concurrently("ix_outbox_events_order_no", "outbox_events")


def downgrade() -> None:
    create_index_concurrently("ix_outbox_events_order_no", "outbox_events", ["order_no"])
    drop_index_concurrently("ix_outbox_events_order_no_sequence", "outbox_events")
    drop_index_concurrently("ix_processed_messages_processed_at", "processed_messages")
    drop_index_concurrently("ix_outbox_deliveries_done", "outbox_deliveries")
