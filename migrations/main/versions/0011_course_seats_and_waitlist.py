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

import contextlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ORDERED = sa.text("status = 'ORDERED'")
LIVE = sa.text("status = 'ORDERED' OR status = 'WAITLISTED'")
WAITING = sa.text("status = 'WAITLISTED'")
MYPAGE_WAITING = sa.text("order_status = 'WAITLISTED'")


def upgrade() -> None:
    with op.batch_alter_table("orders_courses") as batch:
        batch.add_column(sa.Column("capacity", sa.Integer(), nullable=True))
        for name in ("seats_taken", "waitlisted", "last_ticket"):
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
    for table in ("orders_orders", "mypage_rows"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("waitlist_ticket", sa.Integer(), nullable=True))
    with _outside_a_transaction():
        _create("ix_orders_orders_waitlist", ["course_no", "waitlist_ticket"], WAITING)
        _create(
            "ix_mypage_rows_waitlist",
            ["course_no", "waitlist_ticket"],
            MYPAGE_WAITING,
            table="mypage_rows",
        )
        _replace_live_index(LIVE, ORDERED)


def downgrade() -> None:
    with _outside_a_transaction():
        _replace_live_index(ORDERED, LIVE)
        op.drop_index("ix_mypage_rows_waitlist", "mypage_rows", **_concurrently())
        op.drop_index("ix_orders_orders_waitlist", "orders_orders", **_concurrently())
    for table in ("mypage_rows", "orders_orders"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("waitlist_ticket")
    with op.batch_alter_table("orders_courses") as batch:
        for name in ("last_ticket", "waitlisted", "seats_taken", "capacity"):
            batch.drop_column(name)


def _replace_live_index(where, old_where) -> None:
    """uq_orders_orders_live again, on `where`. On PostgreSQL the new one is built beside the
    old one and takes its name, so that the rule holds at every moment."""
    if not _postgresql():
        op.drop_index("uq_orders_orders_live", "orders_orders", sqlite_where=old_where)
        _create("uq_orders_orders_live", ["phone", "course_no"], where, unique=True)
        return
    _create("uq_orders_orders_live_next", ["phone", "course_no"], where, unique=True)
    op.drop_index("uq_orders_orders_live", "orders_orders", **_concurrently())
    op.execute("ALTER INDEX uq_orders_orders_live_next RENAME TO uq_orders_orders_live")


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _concurrently() -> dict:
    return {"postgresql_concurrently": True} if _postgresql() else {}


def _outside_a_transaction():
    # CREATE INDEX CONCURRENTLY refuses to run inside a transaction block.
    return op.get_context().autocommit_block() if _postgresql() else contextlib.nullcontext()


def _create(
    name: str, columns: list[str], where, unique: bool = False, table: str = "orders_orders"
) -> None:
    op.create_index(
        name,
        table,
        columns,
        unique=unique,
        postgresql_where=where,
        sqlite_where=where,
        **_concurrently(),
    )
