"""Evaluation context: interim records while the student learns, and the final score."""
