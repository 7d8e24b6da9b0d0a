"""The suite's own servers and the system's processes.

PostgreSQL (initdb into a temp dir, pg_ctl on a free port) and redis-server (a free port) are
started here and only here; the shared servers on 5432/6379 are never touched. With RabbitMQ
the running server is used through a vhost of our own. `System` runs the API, the relay and
the workers as real processes, each in its own process group, and a supervisor restarts any
that dies, as an orchestrator would.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger("chaos")

QUEUES = ("orders", "learning", "evaluation", "notification", "mypage")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout_s: float, interval_s: float = 0.2, what: str = "condition"):
    """Call `check` until it returns a true value; raise TimeoutError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception:  # noqa: BLE001,S110 - the servers are expected to fail while starting
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s:.0f}s")
        time.sleep(interval_s)


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class PostgresServer:
    """A throw-away PostgreSQL cluster of our own."""

    def __init__(self, root: Path):
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not bins:
            raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
        self.bin = bins[-1].parent
        self.root = root
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.logfile = root / "postgres.log"
        self.port = free_port()
        # initdb and the server refuse to run as root.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self._as, *argv], capture_output=True, text=True, timeout=timeout, check=True
        )

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        self.logfile.touch()
        if self._as:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
            shutil.chown(self.logfile, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )

    def start(self) -> None:
        # fsync=off: the faults kill processes, not the machine; the kernel keeps what was
        # written. synchronous_commit stays on: an acknowledged commit must survive a crash.
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=300"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.logfile),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
            timeout=90,
        )

    def stop(self, mode: str = "fast") -> None:
        """`immediate` is a crash: the postmaster and its backends die without a checkpoint."""
        try:
            self._run(
                str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", timeout=60
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._kill_postmaster()

    def _kill_postmaster(self) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


class RedisServer:
    """A redis-server of our own, with an append-only file so that a restart can keep data."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log_file = open(self.root / "redis.log", "ab")  # noqa: SIM115 - kept by the child
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.root),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--daemonize",
                "no",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        wait_for(self.ping, 20, what="redis up")

    def ping(self) -> bool:
        import redis

        return redis.Redis(port=self.port, socket_timeout=1).ping()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            _kill_group(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def restart(self, keep_data: bool) -> None:
        """SIGKILL, then start again: from the append-only file, or from nothing at all."""
        self.kill()
        if not keep_data:
            shutil.rmtree(self.root / "appendonlydir", ignore_errors=True)
        self.start()

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


class RabbitVhost:
    """A vhost of our own on the running RabbitMQ (127.0.0.1:5672, guest/guest)."""

    def __init__(self, name: str):
        self.name = name
        self.created = False

    @staticmethod
    def _ctl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=True
        )

    def create(self) -> None:
        self._ctl("add_vhost", self.name)
        self.created = True
        self._ctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")

    def delete(self) -> None:
        if self.created:
            self._ctl("delete_vhost", self.name)
            self.created = False

    def close_connections(self) -> None:
        self._ctl(
            "close_all_connections", "--vhost", self.name, "--limit", "10000", "chaos: reconnect"
        )

    def purge(self, queues: tuple[str, ...]) -> None:
        for queue in queues:
            with contextlib.suppress(subprocess.CalledProcessError):
                self._ctl("purge_queue", "-p", self.name, queue)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:5672/{self.name}"


@dataclass
class Proc:
    """One supervised process of the system."""

    name: str
    kind: str  # "api" | "relay" | "worker"
    argv: list[str]
    env: dict[str, str]
    var_dir: Path
    queue: str | None = None
    port: int | None = None
    popen: subprocess.Popen | None = None
    held: bool = False  # kept down on purpose: the supervisor does not restart it
    no_liveness: bool = False  # exempt from the liveness probe (stalled on purpose)
    started_at: float = 0.0
    died_at: float | None = None
    restarts: int = 0

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def heartbeat_age(self) -> float:
        """Seconds since the relay's pass or the worker's canary (its var dir is its own)."""
        if self.kind == "relay":
            beats = [self.var_dir / "relay.heartbeat"]
        else:
            beats = list((self.var_dir / "heartbeats").glob("worker-*"))
        ages = []
        for path in beats:
            with contextlib.suppress(FileNotFoundError):
                ages.append(time.time() - path.stat().st_mtime)
        return min(ages, default=float("inf"))


class System:
    """The API, the relay and the workers, supervised: a dead process is restarted after
    RESTART_DELAY_S, and a worker whose liveness heartbeat is stale (confirmed by
    `onlinestudy health worker`) is killed and restarted, as a liveness probe would."""

    RESTART_DELAY_S = 1.0
    LIVENESS_MAX_AGE_S = 15.0
    LIVENESS_GRACE_S = 30.0

    def __init__(
        self, env: dict[str, str], run_dir: Path, logs: Path, layout: dict[str, int], apis: int
    ):
        self.env = env
        self.run_dir = run_dir
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, Proc] = {}
        self.events: list[dict] = []  # restarts and liveness kills, for the report
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for i in range(apis):
            self._add_api(f"api-{i + 1}")
        self._add("relay", "relay", ["-m", "app.cli", "relay"])
        for queue in QUEUES:
            for i in range(layout.get(queue, 1)):
                name = f"{queue}-{i + 1}"
                self._add(
                    name,
                    "worker",
                    [
                        "-m",
                        "app.cli",
                        "worker",
                        "--queues",
                        queue,
                        "--concurrency",
                        "1",
                        "--hostname",
                        f"chaos-{name}@%h",
                    ],
                    queue=queue,
                )

    def _add_api(self, name: str) -> Proc:
        port = free_port()
        argv = ["-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2"]
        return self._add(name, "api", [*argv, "--timeout", "30", "app:create_app()"], port=port)

    def _add(self, name: str, kind: str, args: list[str], **extra) -> Proc:
        var_dir = self.run_dir / "var" / name  # each process its own, like a pod's filesystem
        var_dir.mkdir(parents=True, exist_ok=True)
        env = dict(self.env, ONLINESTUDY_VAR_DIR=str(var_dir))
        self.procs[name] = Proc(name, kind, [sys.executable, *args], env, var_dir, **extra)
        return self.procs[name]

    def surge(self, api: Proc) -> Proc:
        """A new API process beside `api`, on a port of its own, started: a rollout's surge
        pod. `replace` gives it `api`'s place once `api` has stopped."""
        with self._lock:
            new = self._add_api(api.name)
            self.procs[api.name] = api  # not supervised until it takes the place
        self.start(new)
        return new

    def replace(self, old: Proc, new: Proc) -> None:
        with self._lock:
            self.procs[old.name] = new

    # Processes

    def apis(self) -> list[Proc]:
        return [p for p in self.procs.values() if p.kind == "api"]

    def workers(self, queue: str | None = None) -> list[Proc]:
        return [
            p
            for p in self.procs.values()
            if p.kind == "worker" and (queue is None or p.queue == queue)
        ]

    def start(self, proc: Proc) -> None:
        with self._lock:
            if proc.alive:
                return
            log_file = open(self.logs / f"{proc.name}.log", "ab")  # noqa: SIM115
            proc.popen = subprocess.Popen(
                proc.argv,
                env=proc.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=Path(__file__).resolve().parent.parent,
            )
            log_file.close()
            proc.started_at = time.monotonic()
            proc.died_at = None

    def start_all(self) -> None:
        for proc in self.procs.values():
            self.start(proc)

    def send(self, proc: Proc, sig: int) -> None:
        if proc.popen is not None:
            _kill_group(proc.popen.pid, sig)

    def send_to_leader(self, proc: Proc, sig: int) -> None:
        """Signal the process alone, as an init (tini) passes on what the kubelet sends."""
        if proc.popen is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.popen.send_signal(sig)

    def kill(self, proc: Proc, sig: int = signal.SIGKILL, wait_s: float = 15) -> None:
        """Signal the whole process group (a worker's pool children too) and reap it."""
        popen = proc.popen  # the supervisor may start a new one once this one is dead
        if popen is None or popen.poll() is not None:
            return
        _kill_group(popen.pid, sig)
        try:
            popen.wait(wait_s)
        except subprocess.TimeoutExpired:
            _kill_group(popen.pid, signal.SIGKILL)
            popen.wait(10)
        # Whatever the group leader left behind (a gunicorn worker, a pool child) goes too.
        _kill_group(popen.pid, signal.SIGKILL)

    def hold(self, proc: Proc, sig: int = signal.SIGTERM) -> None:
        """Stop it and keep it down until `release`."""
        proc.held = True
        self.kill(proc, sig, wait_s=30)

    def release(self, proc: Proc) -> None:
        proc.held = False
        self.start(proc)

    # Supervision

    def supervise(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.3):
            for proc in list(self.procs.values()):
                try:
                    self._tend(proc)
                except Exception as exc:  # noqa: BLE001 - the supervisor must go on
                    log.warning("chaos.supervisor.error", proc=proc.name, error=repr(exc))

    def _tend(self, proc: Proc) -> None:
        with self._lock:
            if proc.held or self._stop.is_set():
                return
            now = time.monotonic()
            if not proc.alive:
                if proc.died_at is None:
                    proc.died_at = now
                if now - proc.died_at >= self.RESTART_DELAY_S:
                    proc.restarts += 1
                    self.start(proc)
                return
        if (
            proc.kind == "worker"
            and not proc.no_liveness
            and now - proc.started_at > self.LIVENESS_GRACE_S
            and proc.heartbeat_age() > self.LIVENESS_MAX_AGE_S
        ):
            result = self.health(proc, self.LIVENESS_MAX_AGE_S)
            if result.returncode != 0 and not proc.held and not proc.no_liveness:
                self.events.append(
                    {
                        "at": time.time(),
                        "kind": "liveness_restart",
                        "proc": proc.name,
                        "health": (result.stderr or result.stdout).strip()[-200:],
                    }
                )
                log.warning("chaos.liveness.restart", proc=proc.name)
                self.kill(proc)

    def health(self, proc: Proc, max_age: float) -> subprocess.CompletedProcess:
        """`onlinestudy health worker|relay --max-age` with the process's own settings."""
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "app.cli",
                "health",
                proc.kind,
                "--max-age",
                str(max_age),
            ],
            env=proc.env,
            capture_output=True,
            text=True,
            timeout=30,
            cwd=Path(__file__).resolve().parent.parent,
        )

    def stop_all(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        for proc in self.procs.values():
            if proc.popen is None:
                continue
            self.send(proc, signal.SIGCONT)  # a stopped group cannot act on SIGTERM
            self.send(proc, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            if proc.popen is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            self.send(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(5)


def make_run_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="onlinestudy-chaos-"))
    path.chmod(0o755)  # the postgres user must reach its data dir inside
    return path


def vhost_name() -> str:
    return f"onlinestudy-chaos-{os.getpid()}-{random.randint(0, 1 << 30):x}"
