"""an index for the retention sweep of the notification database's processed records

The sweep deletes the records older than the deduplication window, oldest first; without an
index on processed_at each of its batches would scan the table. Built CONCURRENTLY on
PostgreSQL, so that consumers go on writing meanwhile.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

from app.migrate import create_index_concurrently, drop_index_concurrently

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_notification_processed_messages_processed_at"
TABLE = "notification_processed_messages"


def upgrade() -> None:
    create_index_concurrently(INDEX, TABLE, ["processed_at"])


def downgrade() -> None:
    drop_index_concurrently(INDEX, TABLE)
