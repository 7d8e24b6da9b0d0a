"""The faults, injected while the load runs, and the time the system takes to recover from each:
from the injection (or the end of an outage) until every process is healthy again, a probe
order placed after the injection is fully processed (learning STARTED, My page current), and
every delivery that was pending at the injection is DONE."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import requests
import structlog

from chaos.cluster import QUEUES, PostgresServer, Proc, RabbitVhost, RedisServer, System
from chaos.load import Load, answers_between, failed_requests

log = structlog.get_logger("chaos")

HEALTH_MAX_AGE_S = 5.0  # what "healthy" means for heartbeats, and the stalled-worker probe
REDIS_VISIBILITY_TIMEOUT_S = 3600  # celeryconfig: what a killed worker's message would wait
GRACEFUL_STOP_S = 60.0  # a SIGTERMed process must have exited by then (the drain, a last task)
READY_DEADLINE_S = 60.0  # and its successor be ready by then


@dataclass
class FaultResult:
    kind: str
    recovery_s: float | None
    ok: bool = True
    detail: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"kind": self.kind, "recovery_s": self.recovery_s, "ok": self.ok, **self.detail}


class Faults:
    def __init__(
        self,
        system: System,
        load: Load,
        postgres: PostgresServer,
        redis: RedisServer,
        vhost: RabbitVhost | None,
        main_url: str,
        max_attempts: int,
        rng: random.Random,
        recovery_deadline_s: float,
    ):
        self.system = system
        self.load = load
        self.postgres = postgres
        self.redis = redis
        self.vhost = vhost
        self.main_url = main_url
        self.max_attempts = max_attempts
        self.rng = rng
        self.recovery_deadline_s = recovery_deadline_s
        self.injected: dict[str, str] = {}  # order_no -> status, for the checker

    def run(self, kind: str, inject: Callable[[], FaultResult]) -> FaultResult:
        log.info("chaos.fault.inject", kind=kind)
        try:
            result = inject()
        except Exception as exc:  # noqa: BLE001 - report the fault as failed and go on
            log.exception("chaos.fault.error", kind=kind)
            result = FaultResult(kind, None, False, {"error": f"{exc.__class__.__name__}: {exc}"})
        if result.recovery_s is None:
            result.ok = False
        log.info("chaos.fault.done", kind=kind, recovery_s=result.recovery_s, ok=result.ok)
        return result

    # Recovery

    def recover(self, started: float, since: datetime) -> float | None:
        """Seconds from `started` (monotonic) until healthy, a probe processed and nothing
        pending from before `since`; None past the deadline."""
        probe = self.load.probe()
        deadline = started + self.recovery_deadline_s
        while time.monotonic() < deadline:
            if self.healthy() and self.load.processed(probe) and self.pending_since(since) == 0:
                return round(time.monotonic() - started, 2)
            time.sleep(0.2)
        return None

    def healthy(self) -> bool:
        for proc in self.system.procs.values():
            if not proc.alive:
                return False
            if proc.kind in ("relay", "worker") and proc.heartbeat_age() > HEALTH_MAX_AGE_S:
                return False
        return self.load.api.ready()

    def pending_since(self, since: datetime) -> int:
        """Deliveries created up to `since` that no consumer has recorded yet (DEAD aside)."""
        try:
            with psycopg.connect(self.main_url, connect_timeout=2) as conn:
                return conn.execute(
                    "SELECT count(*) FROM outbox_deliveries"
                    " WHERE status = 'PENDING' AND created_at <= %s",
                    (since,),
                ).fetchone()[0]
        except psycopg.Error:
            return -1

    def _stalled_during(self, began: float) -> list[str]:
        """Workers the supervisor's liveness probe restarted since `began` (wall clock)."""
        return [
            e["proc"]
            for e in self.system.events
            if e["kind"] == "liveness_restart" and e["at"] >= began
        ]

    def _timed(
        self, kind: str, inject: Callable[[], dict | None], broker: bool = False
    ) -> FaultResult:
        """Inject at once and measure the recovery from the injection. After a broker fault
        every worker reconnects: a worker that stalls then is restarted by the supervisor's
        liveness probe (named here), and every worker's own health check is run at the end."""
        began = time.time()
        started, since = time.monotonic(), datetime.now(UTC)
        detail = inject() or {}
        recovery = self.recover(started, since)
        if broker:
            detail["stalled_after_reconnect"] = self._stalled_during(began)
            detail["health_worker_after"] = self._workers_health()
        elif stalled := self._stalled_during(began):
            detail["stalled_workers_restarted"] = stalled
        return FaultResult(kind, recovery, detail=detail)

    def _workers_health(self) -> str:
        """`onlinestudy health worker --max-age 5` of every worker: "n/m ok" or who fails."""
        workers = self.system.workers()
        with ThreadPoolExecutor(4) as pool:
            codes = list(
                pool.map(lambda w: self.system.health(w, HEALTH_MAX_AGE_S).returncode, workers)
            )
        failing = [w.name for w, code in zip(workers, codes, strict=True) if code != 0]
        ok = f"{len(workers) - len(failing)}/{len(workers)} ok"
        return ok if not failing else f"{ok}, failing: {', '.join(failing)}"

    # The faults

    def kill_worker(self, queue: str) -> FaultResult:
        victim = self.rng.choice([w for w in self.system.workers(queue) if w.alive])

        task = self._wait_in_flight(victim, timeout_s=10)

        def inject():
            self.system.kill(victim)  # SIGKILL of the group: the main process and its pool
            return {
                "proc": victim.name,
                "mid_task": task or False,
                "redis_visibility_timeout_s": REDIS_VISIBILITY_TIMEOUT_S,
            }

        return self._timed(f"kill_worker:{queue}", inject)

    def kill_relay(self) -> FaultResult:
        relay = self.system.procs["relay"]
        return self._timed("kill_relay", lambda: self.system.kill(relay))

    def kill_api(self) -> FaultResult:
        victim = self.rng.choice(self.system.apis())

        def inject():
            self.system.kill(victim)  # the gunicorn master and its workers, mid-request
            return {"proc": victim.name}

        return self._timed("kill_api", inject)

    def rolling_restart(self) -> FaultResult:
        """Every process restarted in turn with SIGTERM, as a rollout does: the API processes
        one at a time, the relay, then every worker (a warm shutdown); each must stop on its
        own and be ready again before the next. No request may fail meanwhile: the API drains
        (unready at once, serving what is routed to it) and the workers finish their tasks."""
        started, since = time.monotonic(), datetime.now(UTC)
        before = self.load.api.answers_now()
        procs = [*self.system.apis(), self.system.procs["relay"], *self.system.workers()]
        steps = [self._restart_gracefully(proc) for proc in procs]
        answers = answers_between(before, self.load.api.answers_now())
        rollout_s = round(time.monotonic() - started, 1)
        # Recovery from the last restart: the rollout itself takes minutes.
        recovery = self.recover(time.monotonic(), since)
        failed = failed_requests(answers)
        not_graceful = [s["proc"] for s in steps if not s["graceful"]]
        not_ready = [s["proc"] for s in steps if s["ready_s"] is None]
        kept_ready = [s["proc"] for s in steps if s.get("readiness_after_sigterm", 503) != 503]
        detail = {
            "restarted": len(steps),
            "rollout_s": rollout_s,
            "measured_from": "the last restart",
            "failed_requests": failed,
            "answers": answers,
            "not_graceful": not_graceful,
            "not_ready_again": not_ready,
            "ready_after_sigterm": kept_ready,
            "slowest_stop_s": max(s["stop_s"] for s in steps),
            "slowest_ready_s": max((s["ready_s"] or 0) for s in steps),
        }
        ok = not (failed or not_graceful or not_ready or kept_ready)
        return FaultResult("rolling_restart", recovery, ok, detail)

    def _restart_gracefully(self, proc: Proc) -> dict:
        """The API as a Deployment with maxSurge 1 and maxUnavailable 0 rolls it: a new
        process first, and once it is ready (in the Service) the old one is stopped. The relay
        and a worker are stopped, then started again and awaited until they consume (the
        other worker of the queue goes on meanwhile)."""
        step: dict = {"proc": proc.name}
        if proc.kind == "api":
            endpoints = self.load.api.endpoints
            new = self.system.surge(proc)
            endpoints.add(_base(new))
            step["ready_s"] = self._wait_ready(lambda: endpoints.is_ready(_base(new)))
            self._stop_gracefully(proc, step)
            self.system.replace(proc, new)
            endpoints.remove(_base(proc))
        else:
            try:
                self._stop_gracefully(proc, step)
            finally:
                self.system.release(proc)
            wall = time.time()
            # A heartbeat of the new process: its canary consumed since it started.
            step["ready_s"] = self._wait_ready(
                lambda: proc.heartbeat_age() < min(HEALTH_MAX_AGE_S, time.time() - wall)
            )
        log.info("chaos.rolling_restart.step", **step)
        return step

    def _stop_gracefully(self, proc: Proc, step: dict) -> None:
        """SIGTERM to the process itself (as tini passes on the kubelet's, not to its group),
        and its own exit awaited; an API process is dropped from the endpoints first, as the
        endpoints controller drops a pod being deleted, and its readiness must say 503."""
        proc.held = True  # ours to stop, not the supervisor's to restart
        popen = proc.popen
        stopping = time.monotonic()
        if proc.kind == "api":
            self.load.api.endpoints.terminating(_base(proc))
        self.system.send_to_leader(proc, signal.SIGTERM)
        if proc.kind == "api":
            step["readiness_after_sigterm"] = _readiness_while_draining(_base(proc), popen)
        try:
            step["exit_code"] = popen.wait(GRACEFUL_STOP_S)
            step["graceful"] = True
        except subprocess.TimeoutExpired:
            step["graceful"] = False
        self.system.kill(proc)  # whatever is left of its group
        step["stop_s"] = round(time.monotonic() - stopping, 2)

    @staticmethod
    def _wait_ready(ready: Callable[[], bool]) -> float | None:
        started = time.monotonic()
        while time.monotonic() - started < READY_DEADLINE_S:
            if ready():
                return round(time.monotonic() - started, 2)
            time.sleep(0.1)
        return None

    def redis_restart(self, keep_data: bool) -> FaultResult:
        kind = "redis_restart_aof" if keep_data else "redis_restart_no_persistence"
        broker = self.vhost is None  # with RabbitMQ, Redis is the result backend only
        return self._timed(kind, lambda: self.redis.restart(keep_data=keep_data), broker)

    def rabbitmq_reconnect(self) -> FaultResult:
        """Every connection of our vhost closed by the broker: all workers reconnect."""
        return self._timed("rabbitmq_connections_closed", self.vhost.close_connections, True)

    def rabbitmq_purge(self) -> FaultResult:
        """The broker loses every queued message (as a Redis restart without persistence)."""
        return self._timed("rabbitmq_queues_purged", lambda: self.vhost.purge(QUEUES), True)

    def postgres_restart(self) -> FaultResult:
        def inject():
            down = time.monotonic()
            self.postgres.stop("immediate")  # a crash: backends killed, recovery at start
            time.sleep(1.0)
            self.postgres.start()
            return {"down_s": round(time.monotonic() - down, 2)}

        return self._timed("postgres_restart", inject)

    def evaluation_down(self, duration_s: float) -> FaultResult:
        """Every evaluation worker stopped for a while; recovery counts from their return."""
        workers = self.system.workers("evaluation")
        began = time.time()
        try:
            for worker in workers:
                self.system.hold(worker)
            time.sleep(duration_s)
        finally:
            started, since = time.monotonic(), datetime.now(UTC)
            for worker in workers:
                self.system.release(worker)
        recovery = self.recover(started, since)
        detail = {"down_s": duration_s, "measured_from": "restart of the workers"}
        if stalled := self._stalled_during(began):
            detail["stalled_workers_restarted"] = stalled
        return FaultResult("evaluation_down", recovery, detail=detail)

    def worker_stalled(self) -> FaultResult:
        """SIGSTOP of a worker's process group: alive, consuming nothing. Its health check
        (`onlinestudy health worker --max-age 5`) must fail while it is stopped and pass again
        after SIGCONT."""
        victim = self.rng.choice([w for w in self.system.workers() if w.alive])
        victim.no_liveness = True  # it is our stalled worker: the supervisor leaves it be
        detail: dict = {"proc": victim.name}
        try:
            before = self.system.health(victim, HEALTH_MAX_AGE_S)
            detail["health_before"] = before.returncode
            started, since = time.monotonic(), datetime.now(UTC)
            self.system.send(victim, signal.SIGSTOP)
            try:
                detected = None
                while time.monotonic() - started < 30:
                    result = self.system.health(victim, HEALTH_MAX_AGE_S)
                    if result.returncode != 0:
                        detected = round(time.monotonic() - started, 2)
                        detail["health_while_stalled"] = result.stderr.strip()[-120:]
                        break
                    time.sleep(0.5)
                detail["detection_s"] = detected
            finally:
                self.system.send(victim, signal.SIGCONT)
            resumed = time.monotonic()
            while time.monotonic() - resumed < 30:
                if self.system.health(victim, HEALTH_MAX_AGE_S).returncode == 0:
                    detail["health_passes_again_s"] = round(time.monotonic() - resumed, 2)
                    break
                time.sleep(0.5)
            recovery = self.recover(resumed, since)
        finally:
            victim.no_liveness = False
        ok = (
            detail["health_before"] == 0
            and detail.get("detection_s") is not None
            and "health_passes_again_s" in detail
        )
        detail["measured_from"] = "SIGCONT"
        return FaultResult("worker_stalled", recovery, ok, detail)

    def poison_event(self, subscribers: tuple[str, ...], course_no: str) -> FaultResult:
        """A CourseOrdered that My page cannot fold (its ordered_at is not a date), written
        straight into the outbox in one transaction. It must be parked as DEAD for My page
        after MAX_ATTEMPTS while the other consumers and events go on; once the payload is
        fixed, `events replay` must apply it exactly once."""
        consumer = "mypage.project"
        event_id, order_no = str(uuid.uuid4()), "OPOISON" + uuid.uuid4().hex[:8].upper()
        phone = self.load.new_phone()
        payload = {
            "order_no": order_no,
            "course_no": course_no,
            "course_title": "독이 든 이벤트",
            "phone": phone,
            "ordered_at": "not-a-date",
            "begin_date": "2026-12-01",
            "end_date": "2027-02-28",
        }
        detail: dict = {"event_id": event_id, "order_no": order_no, "consumer": consumer}
        started = time.monotonic()
        with psycopg.connect(self.main_url) as conn:
            conn.execute(
                "INSERT INTO outbox_events (event_id, event_type, order_no, sequence,"
                " occurred_at, payload, correlation_id)"
                " VALUES (%s, 'CourseOrdered', %s, 1, now(), %s::json, 'chaos-poison')",
                (event_id, order_no, json.dumps(payload)),
            )
            conn.execute(
                "INSERT INTO outbox_order_sequences (order_no, last_sequence) VALUES (%s, 1)",
                (order_no,),
            )
            for name in subscribers:
                conn.execute(
                    "INSERT INTO outbox_deliveries (event_id, consumer, status, published,"
                    " failures, next_attempt_at, created_at)"
                    " VALUES (%s, %s, 'PENDING', 0, 0, now(), now())",
                    (event_id, name),
                )
            conn.execute("NOTIFY onlinestudy_outbox")
        self.injected[order_no] = "ORDERED"

        # The others go on: a probe order placed now is processed while the poison fails.
        probe = self.load.probe()
        dead_at = went_on_at = None
        while time.monotonic() - started < 120 and dead_at is None:
            if went_on_at is None and self.load.processed(probe):
                went_on_at = time.monotonic()
            if self._delivery(event_id, consumer)[0] == "DEAD":
                dead_at = time.monotonic()
            time.sleep(0.2)
        status, failures = self._delivery(event_id, consumer)
        detail.update(
            dead_after_s=round(dead_at - started, 2) if dead_at else None,
            attempts=failures,
            max_attempts=self.max_attempts,
            probe_processed_s=round(went_on_at - started, 2) if went_on_at else None,
            others_done=all(
                self._delivery(event_id, other)[0] == "DONE"
                for other in subscribers
                if other != consumer
            ),
        )
        listed = self._cli("events", "dead").stdout
        detail["listed_by_events_dead"] = event_id in listed

        # The fix, then the replay.
        payload["ordered_at"] = datetime.now(UTC).isoformat()
        with psycopg.connect(self.main_url) as conn:
            conn.execute(
                "UPDATE outbox_events SET payload = %s::json WHERE event_id = %s",
                (json.dumps(payload), event_id),
            )
        replayed = time.monotonic()
        detail["replay"] = self._cli("events", "replay", "--event-id", event_id).stdout.strip()
        done_at = None
        while time.monotonic() - replayed < 60:
            if self._delivery(event_id, consumer)[0] == "DONE":
                done_at = time.monotonic()
                break
            time.sleep(0.2)
        time.sleep(3 * float(self.system.env["REDELIVERY_TIMEOUT_S"]))  # room for a second copy
        with psycopg.connect(self.main_url) as conn:
            applied = conn.execute(
                "SELECT count(*) FROM processed_messages WHERE consumer = %s AND event_id = %s",
                (consumer, event_id),
            ).fetchone()[0]
            row = conn.execute(
                "SELECT order_status, ordered_at FROM mypage_rows WHERE order_no = %s",
                (order_no,),
            ).fetchone()
        detail.update(
            applied_times=applied,
            mypage_row=[str(v) for v in row] if row else None,
            listed_after_replay=event_id in self._cli("events", "dead").stdout,
        )
        ok = (
            status == "DEAD"
            and failures == self.max_attempts
            and detail["others_done"]
            and detail["probe_processed_s"] is not None
            and detail["listed_by_events_dead"]
            and done_at is not None
            and applied == 1
            and row is not None
            and row[0] == "ORDERED"
            and not detail["listed_after_replay"]
        )
        detail["measured_from"] = "replay"
        recovery = round(done_at - replayed, 2) if done_at else None
        return FaultResult("poison_event", recovery, ok, detail)

    # Helpers

    def _delivery(self, event_id: str, consumer: str) -> tuple[str | None, int | None]:
        try:
            with psycopg.connect(self.main_url, connect_timeout=2) as conn:
                row = conn.execute(
                    "SELECT status, failures FROM outbox_deliveries"
                    " WHERE event_id = %s AND consumer = %s",
                    (event_id, consumer),
                ).fetchone()
        except psycopg.Error:
            return None, None
        return (row[0], row[1]) if row else (None, None)

    def _cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            env=self.system.procs["relay"].env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parent.parent,
        )

    def _wait_in_flight(self, proc: Proc, timeout_s: float) -> str | None:
        """Wait until the worker has taken a consumer task and not finished it (its log says
        "received" and nothing more yet), so that the kill lands mid-task; the task's name,
        or None if none came within `timeout_s`."""
        path = self.system.logs / f"{proc.name}.log"
        open_tasks: dict[str, str] = {}
        deadline = time.monotonic() + timeout_s
        with open(path, errors="replace") as log_file:
            log_file.seek(0, 2)
            pending = ""
            while time.monotonic() < deadline:
                pending += log_file.read()
                *lines, pending = pending.split("\n")
                for line in lines:
                    match = TASK_LINE.search(line)
                    if not match or match["name"].startswith("health."):
                        continue
                    if match["what"] == "received":
                        open_tasks[match["id"]] = match["name"]
                    else:
                        open_tasks.pop(match["id"], None)
                if open_tasks:
                    return next(iter(open_tasks.values()))
                time.sleep(0.002)
        return None


def _base(proc: Proc) -> str:
    return f"http://127.0.0.1:{proc.port}"


def _readiness_while_draining(base: str, popen) -> int | None:
    """What the process's readiness answers after SIGTERM, until 503 (it drains) or it exits."""
    status = None
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and popen.poll() is None:
        try:
            status = requests.get(f"{base}/health/ready", timeout=2).status_code
        except requests.RequestException:
            status = None
        if status == 503:
            break
        time.sleep(0.05)
    return status


# Celery's worker log: "Task learning.open_learning[<id>] received" ... "succeeded in 0.02s"
TASK_LINE = re.compile(r"Task (?P<name>[\w.]+)\[(?P<id>[0-9a-f-]+)\] (?P<what>\w+)")
