"""Notification context: SMS to students, stored in its own database."""
