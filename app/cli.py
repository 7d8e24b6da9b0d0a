"""The `onlinestudy` command: run everything, or one part (worker, relay), and operate it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click

from app.config import ConfigError, Settings, secret_setting


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None


@click.group()
def main() -> None:
    """onlinestudy: online-study backend (API, relay, Celery workers)."""


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration to both databases."""
    from app.migrate import upgrade

    upgrade(_settings())
    click.echo("databases are up to date")


@main.command()
def relay() -> None:
    """Run the outbox relay until SIGTERM/SIGINT (replaces this process)."""
    _settings()  # a configuration error is reported here, not as a traceback
    os.execvp(sys.executable, [sys.executable, "-m", "workers.relay"])


ALL_QUEUES = "orders,learning,evaluation,notification,mypage"


@main.command()
@click.option(
    "--queues", default=ALL_QUEUES, show_default=True, help="Comma-separated queues to consume."
)
@click.option("--concurrency", default=2, show_default=True, type=int)
@click.option("--hostname", default=None, help="Celery node name (default: from the queues).")
@click.option(
    "--metrics-port",
    default=None,
    type=int,
    help="Serve this worker's Prometheus metrics on this port.",
)
def worker(queues: str, concurrency: int, hostname: str | None, metrics_port: int | None) -> None:
    """Run a Celery worker for some queues (replaces this process)."""
    embedded = _settings().embedded
    known = set(ALL_QUEUES.split(","))
    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = [q for q in wanted if q not in known]
    if unknown or not wanted:
        raise click.ClickException(
            f"unknown queue(s): {', '.join(unknown) or '(none)'}; choose from {ALL_QUEUES}"
        )
    name = hostname or f"{'-'.join(wanted)}@%h"
    if metrics_port:
        # The pool children count tasks; the main process serves their sum.
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="metrics-"))
        os.environ["ONLINESTUDY_WORKER_METRICS_PORT"] = str(metrics_port)
    os.execvp(sys.executable, _worker_argv(wanted, concurrency, name, embedded))


def _worker_argv(queues: list[str], concurrency: int, name: str, embedded: bool) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.celery_app",
        "worker",
        "-Q",
        ",".join(queues),
        "-c",
        str(concurrency),
        "-n",
        name,
        "--loglevel",
        "INFO",
        "-O",
        "fair",
    ]
    if embedded:
        # Heartbeat and gossip are fan-out events; the file transport keeps delivering them to
        # the queue of a monitor that has gone, for ever. A lone local worker needs neither.
        argv += ["--without-heartbeat", "--without-gossip", "--without-mingle"]
    return argv


@main.command()
@click.option("--port", default=8088, show_default=True, type=int)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--concurrency", default=2, show_default=True, type=int, help="Worker processes for all queues."
)
def run(port: int, host: str, concurrency: int) -> None:
    """Migrate, then run the API, the relay and workers for every queue; Ctrl-C stops all."""
    from app.migrate import upgrade

    settings = _settings()
    upgrade(settings)
    # Every process started here writes its metrics to one folder; the API's /metrics sums them.
    metrics_dir = settings.var_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    shutil.rmtree(settings.heartbeats_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    argvs = [
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"{host}:{port}",
            "--workers",
            "2",
            "--access-logfile",
            "-",
            # Phone numbers masked in the access log (gunicorn.conf.py is not read here: the
            # working directory is the user's).
            "--logger-class",
            "app.logging.MaskingGunicornLogger",
            "app:create_app()",
        ],
        [sys.executable, "-m", "workers.relay"],  # what `onlinestudy relay` runs
        _worker_argv(ALL_QUEUES.split(","), concurrency, "all@%h", settings.embedded),
    ]
    children = [subprocess.Popen(argv) for argv in argvs]
    click.echo(f"onlinestudy is running on http://{host}:{port} (Ctrl-C stops it)", err=True)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    while not stopping.is_set() and all(child.poll() is None for child in children):
        stopping.wait(0.5)
    # Each is `python -m <program> ...`: the program names the part that stopped.
    failed = [
        argv[2]
        for argv, child in zip(argvs, children, strict=True)
        if child.poll() not in (None, 0)
    ]
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    if failed and not stopping.is_set():
        raise click.ClickException(f"a part stopped unexpectedly: {', '.join(failed)}")


@main.group()
def events() -> None:
    """The outbox: dead letters, replays and retention."""


@events.command("dead")
def events_dead() -> None:
    """List deliveries parked after too many failures."""
    from app.bootstrap import bootstrap
    from app.shared.outbox.dead_letters import dead_deliveries

    with bootstrap(_settings()).main_session() as session:
        rows = dead_deliveries(session)
        if not rows:
            click.echo("no dead letters")
        for delivery, event in rows:
            last_error = (delivery.last_error or "").strip().splitlines()[-1:] or [""]
            click.echo(
                f"{event.event_id}  {delivery.consumer:28} {event.event_type:26} "
                f"order={event.order_no or '-'} failures={delivery.failures}  "
                f"{last_error[0][:120]}"
            )


@events.command("replay")
@click.option("--event-id", default=None, help="Only this event.")
@click.option("--consumer", default=None, help="Only this consumer (task name).")
def events_replay(event_id: str | None, consumer: str | None) -> None:
    """Deliver dead letters again (all of them, or those selected)."""
    from app.bootstrap import bootstrap
    from app.shared.outbox.dead_letters import replay_dead

    with bootstrap(_settings()).main_session() as session:
        count = replay_dead(session, event_id, consumer)
        session.commit()
    click.echo(f"{count} dead letter(s) queued for redelivery")


@events.command("prune")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
def events_prune(dry_run: bool) -> None:
    """Delete delivered deliveries and processed-messages records older than DEDUP_WINDOW
    (what the relay does every PRUNE_INTERVAL_S)."""
    from app.bootstrap import bootstrap
    from app.config import describe_duration
    from app.shared.retention import prune

    settings = _settings()
    deleted = prune(bootstrap(settings).db.session, settings.dedup_window_s, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    window = describe_duration(settings.dedup_window_s)
    for name, rows in deleted.items():
        click.echo(f"{name:34} {verb} {rows} row(s) older than {window}")


@main.command()
@click.option("--role", required=True, type=click.Choice(["admin", "manager", "student"]))
@click.option("--phone", default=None, help="The student's phone (students only).")
@click.option("--manager-id", default=None, type=int, help="The manager's id (managers only).")
@click.option(
    "--ttl",
    default=3600,
    show_default=True,
    type=click.IntRange(min=60),
    help="Seconds the token is valid (at most JWT_MAX_TTL).",
)
def token(role: str, phone: str | None, manager_id: int | None, ttl: int) -> None:
    """Print a token signed with the configured secret, alone on the last line."""
    from app.security import Tokens
    from app.shared.phone import normalize_mobile

    if role == "student":
        if not phone:
            raise click.UsageError("a student token needs --phone")
        try:
            phone = normalize_mobile(phone)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--phone") from None
    if role == "manager" and manager_id is None:
        raise click.UsageError("a manager token needs --manager-id")
    try:
        issued = Tokens(_settings()).issue(role, phone=phone, manager_id=manager_id, ttl_s=ttl)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:  # a claim no token may carry (--manager-id 0), or a --ttl
        # longer than JWT_MAX_TTL
        raise click.UsageError(str(exc)) from None
    click.echo(issued)


@main.group()
def mypage() -> None:
    """The My page read model."""


@mypage.command("rebuild")
def mypage_rebuild() -> None:
    """Rebuild My page from the event log (the outbox), in one transaction."""
    from app.bootstrap import bootstrap
    from app.mypage.rebuild import rebuild
    from app.policies import BY_CONSUMER

    projection = BY_CONSUMER["mypage.project"]
    with bootstrap(_settings()).main_session() as session:
        rows = rebuild(session, projection.consumer, projection.events)
        session.commit()
    click.echo(f"My page rebuilt: {rows} row(s)")


@main.group()
def health() -> None:
    """Probes for the relay and workers (exit 1 when unhealthy)."""


@health.command("relay")
@click.option("--max-age", default=30.0, show_default=True, help="Seconds.")
def health_relay(max_age: float) -> None:
    """The relay has completed a pass within --max-age seconds."""
    _check_heartbeat(_settings().relay_heartbeat, max_age)


@health.command("worker")
@click.option("--max-age", default=60.0, show_default=True, help="Seconds.")
def health_worker(max_age: float) -> None:
    """Every worker here consumed its liveness canary within --max-age seconds."""
    folder = _settings().heartbeats_dir
    beats = sorted(folder.glob("worker-*")) if folder.exists() else []
    if not beats:
        raise click.ClickException(f"no worker heartbeat in {folder}")
    for path in beats:
        _check_heartbeat(path, max_age)


@main.command()
@click.option("--port", default=5555, show_default=True, type=int)
@click.option("--address", default="127.0.0.1", show_default=True)
def flower(port: int, address: str) -> None:
    """Run Flower on the configured broker; FLOWER_BASIC_AUTH=user:password (or a file named by
    FLOWER_BASIC_AUTH_FILE) protects it."""
    settings = _settings()
    try:
        basic_auth = secret_setting(dict(os.environ), "FLOWER_BASIC_AUTH")
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.celery_app",
        "flower",
        f"--port={port}",
        f"--address={address}",
    ]
    if settings.embedded:
        argv.append("--enable_events=False")  # see celeryconfig: no task events on files
    if basic_auth:
        # Flower reads its options from FLOWER_* variables too: the password stays off the
        # command line, which every process of the machine may read.
        os.environ["FLOWER_BASIC_AUTH"] = basic_auth
    elif address not in ("127.0.0.1", "localhost"):
        raise click.ClickException(
            "set FLOWER_BASIC_AUTH=user:password to serve Flower beyond this machine"
        )
    os.execvp(sys.executable, argv)


def _check_heartbeat(path: Path, max_age: float) -> None:
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        raise click.ClickException(f"no heartbeat at {path}") from None
    if age > max_age:
        raise click.ClickException(
            f"{path.name}: last heartbeat {age:.0f}s ago (limit {max_age:.0f}s)"
        )
    click.echo(f"ok: heartbeat {age:.1f}s ago")


if __name__ == "__main__":
    main()
