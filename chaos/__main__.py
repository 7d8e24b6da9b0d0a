"""`python -m chaos --profile short|long [--broker redis|rabbitmq]`: start the system on its own
servers, run the load, inject the faults, drain, check the history, print the table, write
var/chaos/latest.json; exit 1 on any loss, duplicate, unexpected effect, inconsistency or a
fault the system did not recover from."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import secrets
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import structlog

from app.config import Settings
from app.migrate import upgrade
from chaos.checker import check, default_subscribers, read_snapshot
from chaos.cluster import (
    QUEUES,
    PostgresServer,
    RabbitVhost,
    RedisServer,
    System,
    make_run_dir,
    vhost_name,
    wait_for,
)
from chaos.faults import HEALTH_MAX_AGE_S, REDIS_VISIBILITY_TIMEOUT_S, FaultResult, Faults
from chaos.history import History
from chaos.load import Api, Load, answers_between
from chaos.rush import RushSize, rush_round

log = structlog.get_logger("chaos")
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "var" / "chaos"
MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class Profile:
    load_share: float  # of the end-to-end rate calibrated at the start of the run
    min_orders: int  # the load goes on after the faults until this many orders are placed
    workers_per_queue: int
    evaluation_down_s: float
    gap_s: float  # load between two faults
    budget_s: float  # the fault rounds repeat while there is time left
    recovery_deadline_s: float
    drain_deadline_s: float


PROFILES = {
    "short": Profile(0.45, 1_000, 2, 12, 3, 0, 90, 120),
    "long": Profile(0.45, 10_000, 2, 45, 10, 19 * 60, 180, 240),
}

# The calibration: the run's own story mix from this many students at once, each starting the
# next story as soon as the last ends, for CALIBRATION_S; enough to keep the system saturated.
CALIBRATION_THREADS = 64
CALIBRATION_S = 20.0
# A paced student waits on evaluations, final scores and retries: this many threads per order
# per second keep the offered rate even when answers slow down during a fault.
THREADS_PER_RATE = 4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="short")
    parser.add_argument("--broker", choices=("redis", "rabbitmq"), default="redis")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated fault kinds (or prefixes, e.g. kill_worker) to inject; default all",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the system's processes (e.g. REDELIVERY_TIMEOUT_S=3), repeatable",
    )
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.set)
    only = tuple(k.strip() for k in args.only.split(",") if k.strip())
    # SIGTERM (CI cancelling the job) unwinds through the finally blocks like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    try:
        return Run(args.profile, args.broker, seed, only, overrides).execute()
    except KeyboardInterrupt:
        return 130


class Run:
    def __init__(
        self,
        profile_name: str,
        broker: str,
        seed: int,
        only: tuple[str, ...] = (),
        overrides: dict[str, str] | None = None,
    ):
        self.profile, self.profile_name = PROFILES[profile_name], profile_name
        self.broker, self.seed = broker, seed
        self.only, self.overrides = only, dict(overrides or {})
        self.rng = random.Random(seed)
        self.began = time.monotonic()
        self.run_dir = make_run_dir()
        self.postgres = PostgresServer(self.run_dir / "postgres")
        self.redis = RedisServer(self.run_dir / "redis")
        self.vhost = RabbitVhost(vhost_name()) if broker == "rabbitmq" else None
        self.system: System | None = None
        self.load: Load | None = None

    def say(self, message: str) -> None:
        print(f"[chaos {time.monotonic() - self.began:6.1f}s] {message}", flush=True)

    def execute(self) -> int:
        try:
            return self._execute()
        finally:
            self.say("stopping every process")
            if self.load:
                self.load.stop(timeout_s=30)
                self.load.api.endpoints.stop()
            if self.system:
                self.system.stop_all()
            with contextlib.suppress(Exception):
                self.redis.kill()
            with contextlib.suppress(Exception):
                self.postgres.stop("immediate")
            if self.vhost:
                with contextlib.suppress(Exception):
                    self.vhost.delete()
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _execute(self) -> int:
        profile = self.profile
        self.say(
            f"profile {self.profile_name}, broker {self.broker}, seed {self.seed}"
            + (f", only {','.join(self.only)}" if self.only else "")
            + (f", settings {self.overrides}" if self.overrides else "")
        )
        self.postgres.init()
        self.postgres.start()
        main_url = self.postgres.create_database("onlinestudy")
        notification_url = self.postgres.create_database("onlinestudy_notification")
        self.redis.start()
        if self.vhost:
            self.vhost.create()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CELERY_", "ONLINESTUDY_", "PROMETHEUS_"))
        }
        env.update(
            DATABASE_URL=main_url,
            NOTIFICATION_DATABASE_URL=notification_url,
            CELERY_BROKER_URL=self.vhost.url if self.vhost else self.redis.url(0),
            CELERY_RESULT_BACKEND=self.redis.url(1),
            ONLINESTUDY_VAR_DIR=str(self.run_dir / "var" / "cli"),
            REDELIVERY_TIMEOUT_S="2",
            SCORE_SYNC_TIMEOUT_S="3",
            WORKER_HEARTBEAT_S="1",
            MAX_ATTEMPTS=str(MAX_ATTEMPTS),
            LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
            # The API signs and checks tokens with it (`onlinestudy token`); unused before that.
            JWT_SECRET=secrets.token_hex(32),
        )
        env.update(self.overrides)
        upgrade(Settings.from_env(env))
        logs = OUT / "logs"
        shutil.rmtree(logs, ignore_errors=True)
        layout = dict.fromkeys(QUEUES, profile.workers_per_queue)
        self.system = system = System(env, self.run_dir, logs, layout, apis=2)
        system.start_all()
        api = Api([f"http://127.0.0.1:{p.port}" for p in system.apis()], env)
        wait_for(
            lambda: (
                api.ready()
                and all(
                    p.heartbeat_age() < HEALTH_MAX_AGE_S
                    for p in system.procs.values()
                    if p.kind != "api"
                )
            ),
            timeout_s=120,
            interval_s=0.5,
            what="every process healthy",
        )
        system.supervise()
        self.say(
            f"system up: {len(system.procs)} processes, logs in {logs.relative_to(ROOT)}"
            f" (bearer token: {'yes' if api.token else 'none'})"
        )

        api.endpoints.start()  # from here on requests go to ready API processes only
        history = History()
        seed = self.rng.randrange(1 << 30)
        self.load = load = Load(api, history, seed)
        load.setup()
        calibration = self.calibrate(load, main_url, notification_url)
        target = round(profile.load_share * calibration["orders_per_s"], 2)
        threads = max(8, math.ceil(target * THREADS_PER_RATE))
        self.say(
            f"calibrated: {calibration['orders_per_s']} orders/s end to end"
            f" ({calibration['orders']} orders in {calibration['end_to_end_s']}s);"
            f" the load: {target} orders/s ({profile.load_share:.0%}), {threads} threads"
        )
        before_faults, placed_before = api.answers_now(), load.placed
        load.start(target, threads)
        load_began = time.monotonic()
        time.sleep(5)

        subscribers = default_subscribers()
        faults = Faults(
            system,
            load,
            self.postgres,
            self.redis,
            self.vhost,
            main_url,
            int(env["MAX_ATTEMPTS"]),
            self.rng,
            profile.recovery_deadline_s,
        )
        results: list[FaultResult] = []
        round_no = 0
        while True:
            round_no += 1
            round_began = time.monotonic()
            for kind, inject in self._plan(faults, subscribers, load.courses[0]):
                result = faults.run(kind, inject)
                results.append(result)
                self.say(f"{result.kind}: recovery {result.recovery_s}s ok={result.ok}")
                time.sleep(profile.gap_s)
            # Another round only if it fits in the profile's budget.
            elapsed, round_s = time.monotonic() - self.began, time.monotonic() - round_began
            if elapsed + round_s > profile.budget_s:
                break
            self.say(f"round {round_no} done, another one")

        if load.placed < profile.min_orders:
            self.say(f"{load.placed} orders placed; the load goes on to {profile.min_orders}")
            wait_for(
                lambda: load.placed >= profile.min_orders,
                timeout_s=2 * (profile.min_orders - load.placed) / target + 60,
                interval_s=1,
                what=f"{profile.min_orders} orders placed",
            )
        self.say("stopping the load, waiting for the system to drain")
        load_s = time.monotonic() - load_began
        load.stop(timeout_s=60)
        placed = load.placed - placed_before
        rate = {
            "calibration": calibration,
            "target_orders_per_s": target,
            "load_share": profile.load_share,
            "threads": threads,
            "placed_orders_per_s": round(placed / load_s, 2),
            "placed_share": round(placed / load_s / calibration["orders_per_s"], 2),
        }
        drain = wait_drained(main_url, notification_url, profile.drain_deadline_s)
        self.say(f"drain: {drain}")
        snapshot = read_snapshot(main_url, notification_url)
        report = check(history.snapshot(), snapshot, subscribers, faults.injected)
        wall_s = round(time.monotonic() - self.began, 1)
        failed_faults = [r.kind for r in results if not r.ok]
        summary = {
            "profile": self.profile_name,
            "broker": self.broker,
            "seed": self.seed,
            "only": list(self.only),
            "settings": self.overrides,
            "rate": rate,
            **report.counts,
            "orders": report.orders,
            "indeterminate": report.indeterminate,
            "checked": report.coverage,
            "faults": [r.as_json() for r in results],
            "failed_faults": failed_faults,
            "drain": drain,
            "wall_s": wall_s,
            "load": dict(load.stories),
            "answers": {
                "calibration": calibration["answers"],
                "under_faults": answers_between(before_faults, api.answers_now()),
            },
            "supervisor": system.events,
            "restarts": {p.name: p.restarts for p in system.procs.values() if p.restarts},
            "anomalies": [vars(a) for a in report.anomalies[:200]],
        }
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "latest.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
        (OUT / "history.json").write_text(json.dumps(history.to_json(), ensure_ascii=False))
        print_table(summary)
        bad = any(report.counts.values()) or failed_faults or not drain["drained"]
        return 1 if bad else 0

    def calibrate(self, load: Load, main_url: str, notification_url: str) -> dict:
        """The sustained end-to-end rate of this layout on this machine: orders placed by the
        run's own stories, unpaced, over the time from the first order until every delivery
        and SMS they caused is done."""
        self.say(f"calibrating: {CALIBRATION_THREADS} students, unpaced, {CALIBRATION_S:.0f}s")
        before, placed_before = load.api.answers_now(), load.placed
        started = time.monotonic()
        load.start(None, CALIBRATION_THREADS)
        time.sleep(CALIBRATION_S)
        load.stop(timeout_s=60)
        load_s = time.monotonic() - started
        drain = wait_drained(main_url, notification_url, self.profile.drain_deadline_s)
        if not drain["drained"]:
            raise RuntimeError(f"the calibration load did not drain: {drain}")
        # The drain needs two calm looks a second apart: it ended 1 to 2 s before it is seen.
        end_to_end_s = time.monotonic() - started - 1.5
        orders = load.placed - placed_before
        return {
            "orders": orders,
            "load_s": round(load_s, 1),
            "end_to_end_s": round(end_to_end_s, 1),
            "orders_per_s": round(orders / end_to_end_s, 2),
            "answers": answers_between(before, load.api.answers_now()),
        }

    def _plan(self, faults: Faults, subscribers, course_no: str):
        """The faults of one round, in order: process kills, broker, database, outages."""
        kills = [(f"kill_worker:{q}", lambda q=q: faults.kill_worker(q)) for q in QUEUES]
        self.rng.shuffle(kills)
        plan = [
            *kills,
            ("kill_relay", faults.kill_relay),
            ("kill_api", faults.kill_api),
            ("rolling_restart", faults.rolling_restart),
            ("redis_restart_no_persistence", lambda: faults.redis_restart(keep_data=False)),
            ("redis_restart_aof", lambda: faults.redis_restart(keep_data=True)),
        ]
        if self.vhost:
            plan += [
                ("rabbitmq_connections_closed", faults.rabbitmq_reconnect),
                ("rabbitmq_queues_purged", faults.rabbitmq_purge),
            ]
        plan += [
            ("postgres_restart", faults.postgres_restart),
            # A course with few seats under a burst, an API killed and PostgreSQL restarted.
            ("rush", lambda: rush_round(faults, self.load, self.rng, RushSize())),
            ("evaluation_down", lambda: faults.evaluation_down(self.profile.evaluation_down_s)),
            ("worker_stalled", faults.worker_stalled),
            (
                "poison_event",
                lambda: faults.poison_event(subscribers["CourseOrdered"], course_no),
            ),
        ]
        if self.only:
            plan = [(kind, inject) for kind, inject in plan if kind.startswith(self.only)]
        return plan


def wait_drained(main_url: str, notification_url: str, timeout_s: float) -> dict:
    """Wait until no delivery and no SMS is PENDING (twice in a row, a second apart)."""
    started = time.monotonic()
    calm = 0
    pending = {"deliveries": None, "sms": None}
    while time.monotonic() - started < timeout_s:
        try:
            with psycopg.connect(main_url, connect_timeout=2) as conn:
                pending["deliveries"] = conn.execute(
                    "SELECT count(*) FROM outbox_deliveries WHERE status = 'PENDING'"
                ).fetchone()[0]
            with psycopg.connect(notification_url, connect_timeout=2) as conn:
                pending["sms"] = conn.execute(
                    "SELECT count(*) FROM notification_sms WHERE status = 'PENDING'"
                ).fetchone()[0]
        except psycopg.Error:
            calm = 0
            time.sleep(1)
            continue
        calm = calm + 1 if not any(pending.values()) else 0
        if calm >= 2:
            return {"drained": True, "drain_s": round(time.monotonic() - started, 1), **pending}
        time.sleep(1)
    return {"drained": False, "drain_s": round(time.monotonic() - started, 1), **pending}


def print_table(summary: dict) -> None:
    print()
    print(f"{'fault':34} {'recovery_s':>10}  ok  detail")
    print("-" * 100)
    for fault in summary["faults"]:
        recovery = "-" if fault["recovery_s"] is None else f"{fault['recovery_s']:.2f}"
        extra = {
            k: v
            for k, v in fault.items()
            if k not in ("kind", "recovery_s", "ok", "redis_visibility_timeout_s", "replay")
        }
        shown = ", ".join(f"{k}={v}" for k, v in extra.items())
        print(f"{fault['kind']:34} {recovery:>10}  {'ok' if fault['ok'] else 'NO'}  {shown}")
    print("-" * 100)
    print(
        "recovery_s: from the injection (evaluation_down: from the workers' return, worker_stalled:"
        " from SIGCONT,\n  poison_event: from the replay) until every process is healthy, a probe"
        " order placed after it has\n  learning STARTED and its My page row, and every delivery"
        " pending at the injection is DONE\n  (the outbox redelivers after REDELIVERY_TIMEOUT_S;"
        f" Redis's visibility timeout is {REDIS_VISIBILITY_TIMEOUT_S}s)."
    )
    print("-" * 100)
    figures = (
        "orders",
        "lost",
        "duplicated",
        "unexpected",
        "inconsistent",
        "oversold",
        "seats_lost",
        "indeterminate",
    )
    print("  ".join(f"{name} {summary[name]}" for name in figures))
    print(
        f"checked: {summary['checked']}\n"
        f"rate: {summary['rate']['placed_orders_per_s']} orders/s placed under faults"
        f" ({summary['rate']['placed_share']:.0%} of the calibrated"
        f" {summary['rate']['calibration']['orders_per_s']} orders/s end to end;"
        f" target {summary['rate']['load_share']:.0%})\n"
        f"load: {summary['load']}\n"
        f"answers: calibration {summary['answers']['calibration']},"
        f" under faults {summary['answers']['under_faults']}\n"
        f"drain: {summary['drain']}  wall: {summary['wall_s']}s  "
        f"supervisor: {len(summary['supervisor'])} liveness restart(s)"
    )
    for anomaly in summary["anomalies"][:30]:
        print(f"  {anomaly['kind']:12} {anomaly['what']}: {anomaly['subject']} {anomaly['detail']}")
    print(f"written to {OUT.relative_to(ROOT) / 'latest.json'}")


if __name__ == "__main__":
    sys.exit(main())
