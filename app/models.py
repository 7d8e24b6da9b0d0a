"""Imports every mapped module, so that the metadata (and Alembic) sees all tables."""

from app.evaluation import model as evaluation_model  # noqa: F401
from app.learning import model as learning_model  # noqa: F401
from app.mypage import model as mypage_model  # noqa: F401
from app.notification import model as notification_model  # noqa: F401
from app.orders import model as orders_model  # noqa: F401
from app.shared import idempotency, rate_limits  # noqa: F401
from app.shared.outbox import tables as outbox_tables  # noqa: F401
