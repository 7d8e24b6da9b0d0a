"""the delivery indexes hold only PENDING rows

Every delivery is updated twice (published, then DONE), and each update wrote an entry into
both indexes; they also grew with every delivery ever made. Partial on status = 'PENDING', they
stay the size of the backlog, and a delivery that becomes DONE leaves them.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'PENDING'")


def upgrade() -> None:
    with op.batch_alter_table("outbox_deliveries") as batch_op:
        batch_op.drop_index("ix_outbox_deliveries_due")
        batch_op.drop_index("ix_outbox_deliveries_backlog")
        batch_op.create_index(
            "ix_outbox_deliveries_due",
            ["next_attempt_at"],
            postgresql_where=PENDING,
            sqlite_where=PENDING,
        )
        batch_op.create_index(
            "ix_outbox_deliveries_backlog",
            ["consumer"],
            postgresql_where=PENDING,
            sqlite_where=PENDING,
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox_deliveries") as batch_op:
        batch_op.drop_index("ix_outbox_deliveries_due")
        batch_op.drop_index("ix_outbox_deliveries_backlog")
        batch_op.create_index("ix_outbox_deliveries_due", ["status", "next_attempt_at"])
        batch_op.create_index("ix_outbox_deliveries_backlog", ["consumer", "status"])
