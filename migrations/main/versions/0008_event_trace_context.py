"""the trace context of the span that raised each event

An event carries, beside its correlation id, the W3C trace context of the request or task that
raised it, so that the relay's and the consumers' spans join that trace. Null when tracing is
off. Adding a nullable column without a default rewrites nothing: no lock beyond a moment.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox_events", sa.Column("trace_context", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("outbox_events", "trace_context")
