"""The benchmark of issue 7: `python -m bench [--quick]` (see bench/README.md)."""
