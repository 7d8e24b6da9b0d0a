"""The retention sweep of the relay process: every PRUNE_INTERVAL_S it deletes the bookkeeping
that fell out of DEDUP_WINDOW (app.shared.retention), in a thread of its own so that a long
pass never holds up publishing."""

from __future__ import annotations

import threading

import structlog

from app.container import Container
from app.observability import PRUNED_ROWS
from app.shared.retention import prune

log = structlog.get_logger(__name__)

# The first pass comes this soon after the start (or at the interval, if shorter): a relay
# restarted often (deploys) still prunes.
FIRST_PASS_AFTER_S = 5.0


def sweep_once(container: Container, stop: threading.Event | None = None) -> dict[str, int]:
    """One pass; each batch deleted is counted as it commits. Raises what the database raises."""
    settings = container.settings
    deleted = prune(
        container.db.session,
        settings.dedup_window_s,
        stopping=stop.is_set if stop is not None else lambda: False,
        on_deleted=lambda name, rows: PRUNED_ROWS.labels(name).inc(rows),
    )
    if any(deleted.values()):
        log.info("retention.pruned", **deleted)
    return deleted


def run_sweeper(container: Container, stop: threading.Event) -> None:
    """Sweep until `stop`. A failing pass (the database restarting, say) is logged, and the next
    one comes at the interval as usual."""
    interval_s = container.settings.prune_interval_s
    wait_s = min(FIRST_PASS_AFTER_S, interval_s)
    while not stop.wait(wait_s):
        try:
            sweep_once(container, stop)
        except Exception as exc:  # noqa: BLE001 - the sweep must outlive database outages
            log.warning("retention.failed", error=f"{exc.__class__.__name__}: {exc}")
        wait_s = interval_s


def start_sweeper(container: Container, stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(
        target=run_sweeper, args=(container, stop), name="retention-sweep", daemon=True
    )
    thread.start()
    return thread
