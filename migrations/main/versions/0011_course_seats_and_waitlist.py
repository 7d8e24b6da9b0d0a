"""seats of a course and its waitlist

A course may have a capacity; while it has one, the seats taken, the orders waiting and the
last waitlist ticket are counted on its row (an order takes a seat under that row's lock, and a
sold-out answer reads the row alone). An order keeps its waitlist ticket; an index on the
waiting ones gives the oldest first on a freed seat and each one's position. A waiting order is
live too: one phone has at most one ORDERED or WAITLISTED order of a course. My page keeps the
ticket too, and counts each waiting row's position on an index of its own.

On PostgreSQL the indexes are built CONCURRENTLY: the orders table takes writes meanwhile.
Adding a column with a constant default rewrites nothing.

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.migrate import create_index_concurrently, drop_index_concurrently, on_postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ORDERED = "status = 'ORDERED'"
LIVE = "status = 'ORDERED' OR status = 'WAITLISTED'"


def upgrade() -> None:
    with op.batch_alter_table("orders_courses") as batch:
        batch.add_column(sa.Column("capacity", sa.Integer(), nullable=True))
        for name in ("seats_taken", "waitlisted", "last_ticket"):
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
    for table in ("orders_orders", "mypage_rows"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("waitlist_ticket", sa.Integer(), nullable=True))
    create_index_concurrently(
        "ix_orders_orders_waitlist",
        "orders_orders",
        ["course_no", "waitlist_ticket"],
        where="status = 'WAITLISTED'",
    )
    create_index_concurrently(
        "ix_mypage_rows_waitlist",
        "mypage_rows",
        ["course_no", "waitlist_ticket"],
        where="order_status = 'WAITLISTED'",
    )
    _replace_live_index(LIVE, ORDERED)


def downgrade() -> None:
    _replace_live_index(ORDERED, LIVE)
    drop_index_concurrently("ix_mypage_rows_waitlist", "mypage_rows")
    drop_index_concurrently("ix_orders_orders_waitlist", "orders_orders")
    for table in ("mypage_rows", "orders_orders"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("waitlist_ticket")
    with op.batch_alter_table("orders_courses") as batch:
        for name in ("last_ticket", "waitlisted", "seats_taken", "capacity"):
            batch.drop_column(name)


def _replace_live_index(where: str, old_where: str) -> None:
    """uq_orders_orders_live again, on `where`. On PostgreSQL the new one is built beside the
    old one and takes its name, so that the rule holds at every moment."""
    live = ["phone", "course_no"]
    if not on_postgresql():
        op.drop_index("uq_orders_orders_live", "orders_orders", sqlite_where=sa.text(old_where))
        create_index_concurrently("uq_orders_orders_live", "orders_orders", live, where, True)
        return
    create_index_concurrently("uq_orders_orders_live_next", "orders_orders", live, where, True)
    drop_index_concurrently("uq_orders_orders_live", "orders_orders")
    op.execute("ALTER INDEX uq_orders_orders_live_next RENAME TO uq_orders_orders_live")
