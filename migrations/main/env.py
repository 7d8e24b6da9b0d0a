"""Alembic environment of the main database; the logic is shared in app.migrate."""

from alembic import context

from app.migrate import run_env

run_env(context, "main")
