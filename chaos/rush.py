"""The rush round: a course with few seats ordered by a burst of students (half asking for the
waitlist) while an API process is SIGKILLed and PostgreSQL restarts; then seat holders and
waiting students cancel, under the same faults. Every student retries with its Idempotency-Key
as a real client would; every answer goes into the history, and the checker counts oversold
courses and lost seats (chaos/checker.py) beside everything else."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from chaos.faults import FaultResult, Faults
from chaos.history import OrderHistory
from chaos.load import Load, answers_between, failed_requests


@dataclass(frozen=True)
class RushSize:
    seats: int = 15
    students: int = 90
    threads: int = 12
    seat_cancels: int = 4
    waitlist_cancels: int = 3


def rush_round(faults: Faults, load: Load, rng: random.Random, size: RushSize) -> FaultResult:
    """One round; recovery is measured from the last fault as the other faults' is."""
    api = load.api
    course_no = f"RUSH{uuid.uuid4().hex[:6].upper()}"
    course = {
        "course_no": course_no,
        "title": "카오스 수강신청",
        "price": 1,
        "capacity": size.seats,
    }
    deadline = time.monotonic() + 60
    while (created := api.call("POST", "/courses", course)) is None or created.status_code != 201:
        if time.monotonic() > deadline:
            raise RuntimeError(f"POST /courses: {created.status_code if created else 'no answer'}")
        time.sleep(0.5)
    before = api.answers_now()
    students = [
        load.history.new_order(str(uuid.uuid4()), load.new_phone(), course_no)
        for _ in range(size.students)
    ]
    told: dict[str, str] = {}

    def order(student: OrderHistory) -> None:
        waitlist = rng.random() < 0.5
        told[student.key] = place(load, student, waitlist)

    injected: list[dict] = []

    def inject_during_the_burst() -> None:
        time.sleep(0.5)
        victim = rng.choice(faults.system.apis())
        faults.system.kill(victim)  # the gunicorn master and its workers, mid-request
        injected.append({"kill_api": victim.name})
        time.sleep(1.0)
        down = time.monotonic()
        faults.postgres.stop("immediate")
        time.sleep(1.0)
        faults.postgres.start()
        injected.append({"postgres_restart_s": round(time.monotonic() - down, 2)})

    started = time.monotonic()
    chaos = threading.Thread(target=inject_during_the_burst, name="rush-faults", daemon=True)
    chaos.start()
    with ThreadPoolExecutor(size.threads) as pool:
        list(pool.map(order, students))
    chaos.join()
    burst_s = round(time.monotonic() - started, 1)

    # Then some leave: seat holders (their seats go to the next in line) and waiting students.
    seated = [s for s in students if told.get(s.key) == "ORDERED"]
    waiting = [s for s in students if told.get(s.key) == "WAITLISTED"]
    leaving = rng.sample(seated, min(size.seat_cancels, len(seated)))
    leaving += rng.sample(waiting, min(size.waitlist_cancels, len(waiting)))
    since = datetime.now(UTC)
    last_fault = time.monotonic()
    victim = rng.choice(faults.system.apis())
    with ThreadPoolExecutor(size.threads) as pool:
        cancels = [pool.submit(load.cancel, s) for s in leaving]
        faults.system.kill(victim)
        injected.append({"kill_api_during_cancels": victim.name})
        for future in cancels:
            future.result()
    recovery = faults.recover(last_fault, since)
    detail = {
        "course_no": course_no,
        "seats": size.seats,
        "students": size.students,
        "burst_s": burst_s,
        "told": dict(Counter(told.values())),
        "cancelled": len(leaving),
        "injected": injected,
        "answers": answers_between(before, api.answers_now()),
        "measured_from": "the kill during the cancels",
    }
    detail["failed_requests"] = failed_requests(detail["answers"])
    return FaultResult("rush", recovery, detail=detail)


def place(load: Load, student: OrderHistory, waitlist: bool) -> str:
    """Order with retries under the same key, as the load does; what the student was told in
    the end: ORDERED, WAITLISTED, SOLD_OUT or the last status (None: no answer)."""
    response = load.send_order(student, waitlist=waitlist)
    if response is None:
        return "None"
    if response.status_code in (201, 409):
        return str(response.json().get("status"))
    return str(response.status_code)
