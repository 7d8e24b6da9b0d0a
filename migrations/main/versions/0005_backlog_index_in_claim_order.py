"""the backlog index also orders each consumer's PENDING deliveries by id

The relay claims each consumer's quota in id order (a LATERAL per consumer). On (consumer)
alone, PostgreSQL read every PENDING row of the consumer and sorted them to keep a few; on
(consumer, id) it reads them in order and stops at the quota. The backlog count uses it as
before.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'PENDING'")


def upgrade() -> None:
    with op.batch_alter_table("outbox_deliveries") as batch_op:
        batch_op.drop_index("ix_outbox_deliveries_backlog")
        batch_op.create_index(
            "ix_outbox_deliveries_backlog",
            ["consumer", "id"],
            postgresql_where=PENDING,
            sqlite_where=PENDING,
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox_deliveries") as batch_op:
        batch_op.drop_index("ix_outbox_deliveries_backlog")
        batch_op.create_index(
            "ix_outbox_deliveries_backlog",
            ["consumer"],
            postgresql_where=PENDING,
            sqlite_where=PENDING,
        )
