"""an index for the retention sweep of the notification database's processed records

The sweep deletes the records older than the deduplication window, oldest first; without an
index on processed_at each of its batches would scan the table. Built CONCURRENTLY on
PostgreSQL, so that consumers go on writing meanwhile.

Revision ID: 0002
Revises: 0001
"""

import contextlib
from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_notification_processed_messages_processed_at"
TABLE = "notification_processed_messages"


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    options = {"postgresql_concurrently": True} if postgresql else {}
    # CREATE INDEX CONCURRENTLY refuses to run inside a transaction block.
    with op.get_context().autocommit_block() if postgresql else contextlib.nullcontext():
        op.create_index(INDEX, TABLE, ["processed_at"], **options)


def downgrade() -> None:
    op.drop_index(INDEX, TABLE)
