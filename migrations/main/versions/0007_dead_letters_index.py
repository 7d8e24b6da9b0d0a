"""a partial index of the dead letters by consumer

/metrics counted the backlog and the dead letters with `status <> 'DONE'`, which no index
serves: every scrape read the whole table, 1.25 s at a million orders of history. PENDING rows
have their partial index by consumer already; this gives DEAD rows theirs.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

from app.migrate import create_index_concurrently, drop_index_concurrently

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_index_concurrently(
        "ix_outbox_deliveries_dead", "outbox_deliveries", ["consumer"], where="status = 'DEAD'"
    )


def downgrade() -> None:
    drop_index_concurrently("ix_outbox_deliveries_dead", "outbox_deliveries")
