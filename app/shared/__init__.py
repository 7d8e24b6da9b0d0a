"""The shared kernel: event envelope, outbox, unit of work, idempotency, database base."""
