"""an Idempotency-Key is unique per caller, not across every caller

A key was unique over all orders: another student's key answered 422 (telling that it exists)
or replayed nothing, and blocked the request. The order now keeps the caller who sent the key
(the token's subject), and (caller, key) is unique. Orders placed before have no caller: their
keys no longer replay, which matters only to a retry that straddles the upgrade (it gets 409,
the phone's live order, instead of the first answer).

On PostgreSQL the new unique index is built CONCURRENTLY (orders keep coming in meanwhile) and
then becomes the constraint. SQLite rebuilds the table (batch mode), its indexes with it.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.migrate import create_index_concurrently

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "orders_orders"
OLD = "uq_orders_orders_idempotency_key"
NEW = "uq_orders_orders_idempotency_caller"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        with op.batch_alter_table(TABLE) as batch_op:
            batch_op.add_column(sa.Column("idempotency_caller", sa.String(255), nullable=True))
            batch_op.drop_constraint(OLD, type_="unique")
            batch_op.create_unique_constraint(NEW, ["idempotency_caller", "idempotency_key"])
        return
    op.add_column(TABLE, sa.Column("idempotency_caller", sa.String(255), nullable=True))
    create_index_concurrently(NEW, TABLE, ["idempotency_caller", "idempotency_key"], unique=True)
    op.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {NEW} UNIQUE USING INDEX {NEW}")
    op.drop_constraint(OLD, TABLE, type_="unique")


def downgrade() -> None:
    # Fails if two callers used one key since the upgrade: that is what the upgrade allows.
    with op.batch_alter_table(TABLE) as batch_op:
        batch_op.drop_constraint(NEW, type_="unique")
        batch_op.create_unique_constraint(OLD, ["idempotency_key"])
        batch_op.drop_column("idempotency_caller")
