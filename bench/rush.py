"""The opening rush (수강신청, SPEC 11): a course of 100 seats, thousands of distinct students
ordering it in one burst, half of them asking for the waitlist; then 30 seats cancelled.

Measured, in the run of `python -m bench` (phase `rush`; alone: `--phases post,rush`):
- the answers of the burst: exactly the seats ORDERED, every other answer SOLD_OUT, WAITLISTED
  or 503 with Retry-After, never another 5xx, a timeout or a reset; their p50 and p99;
- fairness: pairs of requests in which the one sent at least FAIR_GAP_S later got a seat the
  earlier did not, and pairs of waiting orders in which the later one is ahead in line;
- the sold-out answer's rate beside the rate of orders of an open course, both in the same
  closed loop as the POST phase, in alternating windows of the same minute (WINDOWS);
- after CANCELS seats are cancelled by their students: how long until the oldest waiting orders
  are ORDERED with their learning STARTED and their SMS sent, and every other waiting order's
  position (on the orders side and on My page) has moved up by CANCELS.

Every student has a token of their own, so the per-caller order limit (keyed by the token's
subject, app/security.py) counts each one once, as it would for real students behind one
address; nothing is exempted for the benchmark.
"""

from __future__ import annotations

import bisect
import json
import random
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from bench import loadgen
from bench.loadgen import order_phone, percentile, student_token

COURSE_NO = "RUSH1"
SEATS = 100
CANCELS = 30
CONNECTIONS = 64  # concurrent client connections of the burst
FAIR_GAP_S = 0.1  # a request sent this much later must not have been served first
PROMOTION_DEADLINE_S = 60.0  # how long the promotion is watched (the goal is 5 s)
SEAT_SMS = ("CourseOrdered", "SeatConfirmed", "LearningStarted")

# Answers the rush allows; anything else counts as failed.
ALLOWED = ("ORDERED", "WAITLISTED", "SOLD_OUT", "503 with Retry-After")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def answer_of(status: int, body: str, retry_after: str | None) -> str:
    """What the student was told, as one word."""
    if status == 201:
        try:
            return json.loads(body)["status"]
        except (ValueError, KeyError):
            return "201 unreadable"
    if status == 409 and '"SOLD_OUT"' in body:
        return "SOLD_OUT"
    if status == 503:
        return "503 with Retry-After" if retry_after else "503 without Retry-After"
    return "no answer (timeout or reset)" if status == 0 else f"{status}"


def unfair_pairs(requests: list[tuple[float, bool]], gap_s: float = FAIR_GAP_S) -> int:
    """Pairs (a, b) with b sent at least `gap_s` after a, where b was served (True) and a was
    not: for each served b, the unserved ones sent up to b's time minus the gap."""
    unserved = sorted(sent for sent, served in requests if not served)
    return sum(bisect.bisect_right(unserved, sent - gap_s) for sent, served in requests if served)


def line_inversions(waiting: list[tuple[float, int]], gap_s: float = FAIR_GAP_S) -> int:
    """Pairs of waiting orders (sent at, ticket) where the one sent at least `gap_s` later
    has the smaller ticket (is ahead in line)."""
    by_sent = sorted(waiting)
    earlier: list[int] = []  # tickets of those sent at least gap_s before the current one
    count, i = 0, 0
    for sent, ticket in by_sent:
        while i < len(by_sent) and by_sent[i][0] <= sent - gap_s:
            bisect.insort(earlier, by_sent[i][1])
            i += 1
        count += len(earlier) - bisect.bisect_right(earlier, ticket)
    return count


def run(bench) -> None:
    """The rush phase on `bench` (a bench.__main__.Bench with its system and pipeline up)."""
    p = bench.p
    students = p["rush_students"]
    log(
        f"rush: {students:,} students, {SEATS} seats, {CONNECTIONS} connections, "
        "half asking for the waitlist"
    )
    bench.call(
        "POST",
        "/courses",
        {
            "course_no": COURSE_NO,
            "title": "수강신청 러시",
            "category": "bench",
            "price": 50000,
            "capacity": SEATS,
        },
    )
    base = bench.phones()
    spec = bench.spec(
        "order",
        processes=CONNECTIONS,
        count=students,
        phone_base=base,
        course_no=COURSE_NO,
        waitlist_half=True,
        keep_answers=True,
    )
    bench.quiet()
    bench.monitor.mark("rush0")
    burst = loadgen.run(spec)
    bench.monitor.mark("rush1")
    cpu = bench.phase_cpu("rush_burst", "rush0", "rush1")

    told: dict[int, tuple[float, str, str | None]] = {}  # phone index -> (sent, answer, order)
    answers: Counter = Counter()
    for sent, _latency, status, (index, body, retry_after) in burst.samples:
        answer = answer_of(status, body, retry_after)
        answers[answer] += 1
        order_no = json.loads(body)["order_no"] if status == 201 else None
        told[index] = (sent, answer, order_no)
    latencies = [s[1] for s in burst.samples]
    with bench.dbs.connect() as conn:
        seats_taken, waitlisted = conn.execute(
            "SELECT seats_taken, waitlisted FROM orders_courses WHERE course_no = %s",
            (COURSE_NO,),
        ).fetchone()
        rows = conn.execute(
            "SELECT idempotency_key, status, waitlist_ticket FROM orders_orders "
            "WHERE course_no = %s",
            (COURSE_NO,),
        ).fetchall()
    stored = {int(key.removeprefix("bench-")): (status, ticket) for key, status, ticket in rows}
    seated = sum(1 for status, _t in stored.values() if status == "ORDERED")
    failed = sum(n for answer, n in answers.items() if answer not in ALLOWED)
    told_seated = answers["ORDERED"]
    seat_pairs = unfair_pairs(
        [(sent, stored.get(i, ("",))[0] == "ORDERED") for i, (sent, _a, _o) in told.items()]
    )
    line_pairs = line_inversions(
        [
            (told[i][0], ticket)
            for i, (status, ticket) in stored.items()
            if status == "WAITLISTED" and i in told
        ]
    )
    wall = burst.wall_s
    bench.results.update(
        rush_seated=seated,
        rush_failed_answers=failed,
        rush_p50_ms=round(1000 * percentile(latencies, 50), 1),
        rush_p99_ms=round(1000 * percentile(latencies, 99), 1),
        rush_unfair_seat_pairs=seat_pairs,
        rush_unfair_waitlist_pairs=line_pairs,
    )
    bench.details["rush"] = {
        "students": students,
        "seats": SEATS,
        "connections": CONNECTIONS,
        "answers": dict(answers),
        "statuses": burst.statuses(),
        "burst_s": round(wall, 2),
        "answers_per_s": round(len(burst.samples) / wall, 1) if wall else None,
        "told_ordered": told_seated,
        "stored": dict(Counter(status for status, _t in stored.values())),
        "course_counts": {"seats_taken": seats_taken, "waitlisted": waitlisted},
        "max_ms": round(1000 * max(latencies), 1),
        "fair_gap_ms": int(FAIR_GAP_S * 1000),
        # Where the machine went meanwhile: the API, the pipeline carrying the burst's events,
        # the servers, and what other processes on the machine took.
        "cpu_s_by_role": {k: round(v, 2) for k, v in sorted(cpu["system_by_role"].items())},
        "servers_cpu_s": {k: round(v, 2) for k, v in cpu["servers"].items()},
        "others_cpu_s": cpu["everyone"]["others_cpu_s"],
        "client_cpu_s": round(burst.client_cpu_s, 2),
    }
    log(
        f"  burst of {len(burst.samples):,} in {wall:.1f}s: {dict(answers)}; "
        f"p99 {bench.results['rush_p99_ms']} ms; unfair pairs: seats {seat_pairs}, "
        f"waitlist {line_pairs}"
    )
    if seated != SEATS or told_seated != SEATS:
        log(f"  WARNING: {seated} orders hold a seat ({told_seated} told ORDERED), not {SEATS}")

    log("  draining the burst's events")
    bench.drain()
    promotion(bench, told, stored)
    bench.drain()
    sold_out_rate(bench)  # the course is still full: the seats freed went to the waitlist


# The sold-out answer against an order: alternating windows, A B B A A B, so that a machine
# that speeds up or slows down during the run (a VM's neighbours) weighs on both alike.
WINDOWS = ("sold_out", "order", "order", "sold_out", "sold_out", "order")


def sold_out_rate(bench) -> None:
    """Orders of the full course and orders of an open one (BENCH1), in alternating windows of
    the same closed loop as the POST phase (the same client processes, a new student each), the
    API alone as in the POST phase: the relay and the workers stop meanwhile, and the open
    course's orders are set aside before they start again."""
    p = bench.p
    window_s = p["post_s"] / 2
    course = {"sold_out": COURSE_NO, "order": "BENCH1"}
    status = {"sold_out": 409, "order": 201}
    bench.stop_pipeline()
    for kind in ("sold_out", "order"):  # warm both paths up
        loadgen.run(
            bench.spec("order", duration_s=1, phone_base=bench.phones(), course_no=course[kind])
        )
    answers = {kind: [] for kind in course}
    wall = dict.fromkeys(course, 0.0)
    api_cpu = dict.fromkeys(course, 0.0)
    statuses: dict[str, Counter] = {kind: Counter() for kind in course}

    def run_windows():
        for i, kind in enumerate(WINDOWS):
            if i == 0:
                bench.start_spy(window_s, names=("api",), prefix="rush-sold-out-")
            bench.monitor.mark(f"rush-{i}-0")
            r = loadgen.run(
                bench.spec(
                    "order", duration_s=window_s, phone_base=bench.phones(), course_no=course[kind]
                )
            )
            bench.monitor.mark(f"rush-{i}-1")
            if i == 0:
                bench.stop_spy()
            cpu = bench.monitor.cpu_between(f"rush-{i}-0", f"rush-{i}-1")
            api_cpu[kind] += sum(
                v for role, v in cpu["system_by_role"].items() if role.split(".")[0] == "api"
            )
            answers[kind] += r.ok((status[kind],))
            wall[kind] += r.wall_s
            statuses[kind].update(r.statuses())

    bench.measured("rush_sold_out", run_windows, retries=0)
    bench.set_aside_deliveries()
    bench.start_pipeline()
    sold_out = answers["sold_out"]
    bench.results["rush_sold_out_per_s"] = round(len(sold_out) / wall["sold_out"], 1)
    bench.results["rush_orders_per_s"] = round(len(answers["order"]) / wall["order"], 1)
    bench.results["rush_sold_out_p99_ms"] = round(
        1000 * percentile([s[1] for s in sold_out], 99), 1
    )
    # The API's CPU per answer is steadier than the rates when other processes share the
    # machine.
    bench.details["rush_sold_out"] = {
        "windows": list(WINDOWS),
        "window_s": window_s,
        "statuses": {kind: dict(counts) for kind, counts in statuses.items()},
        "api_cpu_ms_per_answer": round(1000 * api_cpu["sold_out"] / max(1, len(sold_out)), 2),
        "api_cpu_ms_per_order": round(1000 * api_cpu["order"] / max(1, len(answers["order"])), 2),
    }
    log(
        f"  sold-out answers: {bench.results['rush_sold_out_per_s']}/s, orders in the windows "
        f"between: {bench.results['rush_orders_per_s']}/s"
    )


def promotion(bench, told: dict, stored: dict) -> None:
    """CANCELS seat holders cancel at once; watch the oldest waiting orders take their seats."""
    rng = random.Random(22)
    holders = sorted(
        (index, order_no)
        for index, (_sent, answer, order_no) in told.items()
        if answer == "ORDERED"
    )
    cancelled = rng.sample(holders, min(CANCELS, len(holders)))
    by_ticket = sorted(
        (ticket, index) for index, (status, ticket) in stored.items() if status == "WAITLISTED"
    )
    next_in_line = [told[index][2] for _ticket, index in by_ticket[:CANCELS]]
    still_waiting = {told[index][2]: pos for pos, (_t, index) in enumerate(by_ticket, 1)}
    for order_no in next_in_line:
        still_waiting.pop(order_no)
    expected = {order_no: pos - CANCELS for order_no, pos in still_waiting.items()}
    secret = bench.env["JWT_SECRET"]

    def cancel(item) -> int:
        index, order_no = item
        token = student_token(secret, order_phone(index), int(time.time()))
        request = urllib.request.Request(
            f"{bench.api}/orders/{order_no}/cancel", data=b"{}", method="POST"
        )
        request.add_header("Content-Type", "application/json")
        request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    log(f"  cancelling {len(cancelled)} seats; watching the {len(next_in_line)} next in line")
    started = time.time()
    with ThreadPoolExecutor(len(cancelled)) as pool:
        cancels = Counter(pool.map(cancel, cancelled))
    reached: dict[str, float] = {}
    checks = ("seated", "learning_started", "sms_sent", "positions", "mypage_positions")
    with bench.dbs.connect() as main, bench.dbs.connect("notification") as notification:
        while time.time() - started < PROMOTION_DEADLINE_S and len(reached) < len(checks):
            state = _promotion_state(main, notification, next_in_line, expected)
            for name in checks:
                if state[name] and name not in reached:
                    reached[name] = round(time.time() - started, 2)
            time.sleep(0.05)
        final = _promotion_state(main, notification, next_in_line, expected)
        holding = main.execute(
            "SELECT count(*) FROM orders_orders WHERE course_no = %s "
            "AND status IN ('ORDERED', 'COMPLETED')",
            (COURSE_NO,),
        ).fetchone()[0]
    done = len(reached) == len(checks)
    bench.results["rush_promotion_s"] = max(reached.values()) if done else None
    bench.details["rush_promotion"] = {
        "cancelled": len(cancelled),
        "cancel_answers": dict(cancels),
        "seconds_until": reached,
        "final": {k: v for k, v in final.items() if k not in checks},
        "seats_held_after": holding,
    }
    log(f"  promotion: {reached} (seats held after: {holding})")


def _promotion_state(main, notification, next_in_line: list, expected: dict) -> dict:
    seated = main.execute(
        "SELECT count(*) FROM orders_orders WHERE order_no = ANY(%s) AND status = 'ORDERED'",
        (next_in_line,),
    ).fetchone()[0]
    started = main.execute(
        "SELECT count(*) FROM learning_learnings WHERE order_no = ANY(%s) AND status = 'STARTED'",
        (next_in_line,),
    ).fetchone()[0]
    sent = notification.execute(
        "SELECT count(*) FROM notification_sms WHERE order_no = ANY(%s) AND status = 'SENT' "
        "AND event_type = ANY(%s)",
        (next_in_line, list(SEAT_SMS)),
    ).fetchone()[0]
    positions = dict(
        main.execute(
            "SELECT order_no, rank() OVER (ORDER BY waitlist_ticket) FROM orders_orders "
            "WHERE course_no = %s AND status = 'WAITLISTED'",
            (COURSE_NO,),
        ).fetchall()
    )
    shown = dict(
        main.execute(
            "SELECT order_no, rank() OVER (ORDER BY waitlist_ticket) FROM mypage_rows "
            "WHERE course_no = %s AND order_status = 'WAITLISTED'",
            (COURSE_NO,),
        ).fetchall()
    )
    return {
        "seated": seated == len(next_in_line),
        "learning_started": started == len(next_in_line),
        "sms_sent": sent == len(SEAT_SMS) * len(next_in_line),
        "positions": positions == expected,
        "mypage_positions": shown == expected,
        "counts": {"seated": seated, "learning_started": started, "sms_sent": sent},
        "positions_wrong": sum(1 for o, pos in expected.items() if positions.get(o) != pos),
        "mypage_positions_wrong": sum(1 for o, pos in expected.items() if shown.get(o) != pos),
    }
