"""Celery workers and the outbox relay."""
