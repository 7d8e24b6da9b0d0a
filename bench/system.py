"""The system under test: its databases, its environment, its processes, and what they cost.

Everything started here runs in its own process group and is stopped by `Processes.stop_all()`;
`Databases.drop()` removes the databases. The benchmark calls both in a `finally`.
"""

from __future__ import annotations

import contextlib
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")


# The fixed process layout for 2 cores (see bench/README.md for why).
@dataclass(frozen=True)
class WorkerGroup:
    name: str
    queues: str
    concurrency: int


@dataclass(frozen=True)
class Layout:
    api_workers: int = 2  # gunicorn sync workers, as in the image and the manifests
    workers: tuple[WorkerGroup, ...] = (
        # The two steps of the synchronous final score, and the evaluation policies.
        WorkerGroup("sync", "orders,evaluation", 2),
        # The asynchronous policies, which carry most of the events.
        WorkerGroup("async", "learning,notification,mypage", 3),
    )

    def describe(self) -> dict:
        return {
            "api": f"gunicorn --workers {self.api_workers} (sync)",
            # GUNICORN_CMD_ARGS, if set, applies to hello, the floor and the API alike.
            "gunicorn_cmd_args": os.environ.get("GUNICORN_CMD_ARGS", ""),
            "relay": 1,
            "workers": {
                g.name: {"queues": g.queues, "concurrency": g.concurrency} for g in self.workers
            },
        }


def parse_workers(text: str) -> tuple[WorkerGroup, ...]:
    """'orders,evaluation:2;learning,notification,mypage:3' -> worker groups."""
    groups = []
    for i, part in enumerate(p for p in text.split(";") if p.strip()):
        queues, _, conc = part.rpartition(":")
        groups.append(WorkerGroup(f"w{i}", queues.strip(), int(conc)))
    return tuple(groups)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Databases:
    """Two fresh PostgreSQL databases of our own: main and notification."""

    def __init__(self, tag: str):
        self.main = f"onlinestudy_bench_{tag}"
        self.notification = f"onlinestudy_bench_{tag}_notification"
        self.created: list[str] = []

    def url(self, name: str) -> str:
        return f"{PG_URL}/{name}"

    def create(self) -> None:
        with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
            for name in (self.main, self.notification):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{name}"')
                self.created.append(name)

    def drop(self) -> None:
        with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
            for name in self.created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()

    def connect(self, which: str = "main") -> psycopg.Connection:
        name = {"main": self.main, "notification": self.notification}.get(which, which)
        return psycopg.connect(self.url(name), autocommit=True)


# The PostgreSQL settings the figures depend on. Autovacuum in particular: off, nothing analyzes
# or vacuums the tables during a run.
SERVER_SETTINGS = (
    "server_version",
    "autovacuum",
    "shared_buffers",
    "synchronous_commit",
    "max_connections",
)


def postgres_settings() -> dict[str, str]:
    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        rows = conn.execute(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
            (list(SERVER_SETTINGS),),
        )
        return dict(sorted(rows))


def system_env(dbs: Databases, var_dir: Path, extra: dict[str, str] | None = None) -> dict:
    """The environment every process of the system gets (production mode: PostgreSQL, Redis)."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=dbs.url(dbs.main),
        NOTIFICATION_DATABASE_URL=dbs.url(dbs.notification),
        CELERY_BROKER_URL=REDIS_URL,
        CELERY_RESULT_BACKEND=REDIS_URL,
        ONLINESTUDY_VAR_DIR=str(var_dir),
        # As the image: metrics of several processes are summed through files.
        PROMETHEUS_MULTIPROC_DIR=str(var_dir / "metrics"),
        PYTHONUNBUFFERED="1",
        # The overload guard must not refuse orders while the API is measured alone (its
        # learning backlog then only grows); the benchmark bounds the backlog itself.
        LEARNING_BACKLOG_LIMIT="100000000",
        # Needed once the API checks tokens (HS256 outside the embedded mode); harmless before.
        JWT_SECRET=secrets.token_urlsafe(48),
    )
    env.setdefault("LOG_LEVEL", "INFO")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if extra:
        env.update(extra)
    (var_dir / "metrics").mkdir(parents=True, exist_ok=True)
    return env


class Processes:
    """Starts the system's processes in their own sessions; output goes to log files."""

    def __init__(self, env: dict, logs: Path):
        self.env, self.logs = env, logs
        logs.mkdir(parents=True, exist_ok=True)
        self.running: dict[str, subprocess.Popen] = {}
        self._files = []

    def start(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - kept open for the child
        self._files.append(log)
        process = subprocess.Popen(
            argv,
            env=env or self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=str(ROOT),
        )
        self.running[name] = process
        return process

    def gunicorn(self, name: str, target: str, port: int, workers: int, env=None):
        return self.start(
            name,
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                target,
            ],
            env,
        )

    def stop(self, name: str, timeout: float = 20) -> None:
        process = self.running.pop(name, None)
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
        # Whatever is left of the group (pool children) is killed.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)
        for f in self._files:
            f.close()
        self._files.clear()


def wait_http(url: str, timeout_s: float = 60, process: subprocess.Popen | None = None) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except Exception as exc:  # noqa: BLE001
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} not up: {last}")


def wait_log(path: Path, needle: str, timeout_s: float = 60, process=None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{path.name}: process exited with {process.returncode}")
        try:
            if needle in path.read_text(errors="replace"):
                return
        except FileNotFoundError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{path.name}: no {needle!r} within {timeout_s}s")


# --- CPU and memory --------------------------------------------------------------------------


@dataclass
class _Seen:
    role: str
    first_cpu: float
    last_cpu: float
    born_after_mark: bool = False


@dataclass
class Monitor:
    """Samples the system's processes every `interval_s`: CPU time per role, peak RSS per role,
    the shared servers' CPU (PostgreSQL, Redis), and everyone else's (noise)."""

    roots: dict[str, subprocess.Popen]
    # The shared servers' processes that work for us: pid -> role ("postgresql" for the
    # backends of our databases, "redis" for the server), asked at each sample.
    server_pids: object = None
    interval_s: float = 0.25
    peak_rss: dict[str, int] = field(default_factory=dict)
    _seen: dict[tuple[int, float], _Seen] = field(default_factory=dict)
    _marks: dict[str, dict] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _roles(self) -> list[tuple[str, psutil.Process]]:
        found = []
        for name, popen in list(self.roots.items()):
            if popen.poll() is not None:
                continue
            try:
                root = psutil.Process(popen.pid)
                found.append((f"{name}.main", root))
                for child in root.children(recursive=True):
                    found.append((f"{name}.child", child))
            except psutil.Error:
                continue
        return found

    def _servers(self) -> list[tuple[str, psutil.Process]]:
        found = []
        if self.server_pids is None:
            return found
        try:
            pids = self.server_pids()
        except Exception:  # noqa: BLE001 - a sample without them
            return found
        for pid, role in pids.items():
            try:
                found.append((role, psutil.Process(pid)))
            except psutil.Error:
                continue
        return found

    def sample(self) -> None:
        with self._lock:
            for role, proc in self._roles() + self._servers():
                try:
                    with proc.oneshot():
                        t = proc.cpu_times()
                        rss = proc.memory_info().rss
                        key = (proc.pid, proc.create_time())
                except psutil.Error:
                    continue
                cpu = t.user + t.system
                seen = self._seen.get(key)
                if seen is None:
                    # A process born since the last sample: all its CPU counts.
                    self._seen[key] = _Seen(role, 0.0, cpu, born_after_mark=True)
                else:
                    seen.last_cpu = cpu
                if role not in ("postgresql", "redis"):
                    self.peak_rss[role] = max(self.peak_rss.get(role, 0), rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def mark(self, name: str) -> None:
        """Remember the CPU counters now, to diff against later."""
        self.sample()
        with self._lock:
            self._marks[name] = {
                "at": time.time(),
                "system": {k: v.last_cpu for k, v in self._seen.items()},
                "machine": psutil.cpu_times(),
                "everyone": _all_cpu(),
                "bench_self": _bench_self_cpu(),
            }

    def cpu_between(self, start: str, end: str) -> dict:
        """CPU seconds spent between two marks: by role, PostgreSQL+Redis, machine, others."""
        a, b = self._marks[start], self._marks[end]
        by_role: dict[str, float] = {}
        servers = {"postgresql": 0.0, "redis": 0.0}
        for key, cpu_b in b["system"].items():
            role = self._seen[key].role
            cpu_a = a["system"].get(key, 0.0)
            target = servers if role in servers else by_role
            target[role] = target.get(role, 0.0) + max(0.0, cpu_b - cpu_a)
        m_a, m_b = a["machine"], b["machine"]
        busy = (sum(m_b) - m_b.idle - getattr(m_b, "iowait", 0)) - (
            sum(m_a) - m_a.idle - getattr(m_a, "iowait", 0)
        )
        machine = {
            f: round(getattr(m_b, f) - getattr(m_a, f), 2)
            for f in ("user", "system", "irq", "softirq", "steal", "iowait", "idle")
            if hasattr(m_b, f)
        }
        return {
            "seconds": b["at"] - a["at"],
            "machine": machine,
            "bench_self_s": round(b["bench_self"] - a["bench_self"], 2),
            "system_by_role": by_role,
            "system": sum(by_role.values()),
            "servers": servers,
            "machine_busy": busy,
            "everyone": _diff_everyone(a["everyone"], b["everyone"]),
        }


def _bench_self_cpu() -> float:
    """CPU seconds of the benchmark itself: this process and its reaped children (the load
    generator's processes; the system's processes are reaped only when stopped, after the
    phase's last mark)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def _ours() -> set[int]:
    me = psutil.Process()
    try:
        return {me.pid, *(c.pid for c in me.children(recursive=True))}
    except psutil.Error:
        return {me.pid}


def _all_cpu() -> dict[tuple[int, float], tuple[str, float, bool]]:
    """Every process's CPU seconds, and whether it is ours (the benchmark's or a server's)."""
    ours = _ours()
    out = {}
    for p in psutil.process_iter(["name", "cpu_times", "create_time", "cmdline"]):
        t = p.info["cpu_times"]
        if t is None:
            continue
        name = p.info["name"] or "?"
        cmd = " ".join((p.info["cmdline"] or [])[:4])[:100] or name
        mine = p.pid in ours or name.startswith(("postgres", "redis-server"))
        out[(p.pid, p.info["create_time"] or 0.0)] = (cmd, t.user + t.system, mine)
    return out


def _diff_everyone(a: dict, b: dict) -> dict:
    """CPU seconds of the processes that are not ours between the marks: someone else's work
    on this machine (a test run, say), measured as noise."""
    others: dict[str, float] = {}
    for key, (cmd, cpu, mine) in b.items():
        if mine:
            continue
        delta = cpu - (a[key][1] if key in a else 0.0)
        if delta > 0.01:
            others[f"{key[0]} {cmd}"] = round(delta, 2)
    top = dict(sorted(others.items(), key=lambda kv: -kv[1])[:5])
    return {"others_cpu_s": round(sum(others.values()), 2), "top_others": top}


def machine_busy_share(seconds: float = 1.0) -> float:
    """The machine's busy share (0..1 over all cores) over the next `seconds`."""
    return psutil.cpu_percent(interval=seconds) / 100.0


def wait_for_quiet(limit: float = 0.25, max_wait_s: float = 60.0, log=print) -> float:
    """Wait (up to max_wait_s) until the machine is mostly idle before a measurement: other
    work on this 2-core machine (a test run, say) would be measured as ours. Returns the busy
    share last seen."""
    deadline = time.monotonic() + max_wait_s
    busy = machine_busy_share(1.0)
    while busy > limit and time.monotonic() < deadline:
        log(f"  machine busy {busy:.0%} before measuring; waiting for quiet")
        busy = machine_busy_share(2.0)
    return busy
