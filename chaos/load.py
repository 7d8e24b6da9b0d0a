"""The load: students ordering, managers recording and giving final scores, cancels (some racing
the final score), through the HTTP API with retries and Idempotency-Keys; every answer goes
into the history the checker reads."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import requests

from chaos.history import Command, History, OrderHistory

TIMEOUT = (2.0, 10.0)  # connect, read: the final score waits up to SCORE_SYNC_TIMEOUT_S
RETRY_WINDOW_S = 20.0  # how long a command is retried before the client gives up


def fetch_token(env: dict[str, str]) -> str | None:
    """A bearer token from `onlinestudy token --role admin` (its last line), if there is such a
    command; without one the API needs none."""
    try:
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", "token", "--role", "admin"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parent.parent,
        )
    except subprocess.TimeoutExpired:
        return None
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    if result.returncode != 0 or not lines:
        return None
    return lines[-1]


# What a client can get instead of an HTTP answer.
CONNECTION_ERRORS = ("refused", "reset", "timeout", "connection error")
PROBE_INTERVAL_S = 0.5  # how often the endpoints are probed, as a readiness probe would


def answer_of(response: requests.Response | None, error: Exception | None = None) -> str:
    """The key an answer is counted under: its status ("201"; "503 without Retry-After" apart,
    the only 5xx a client may retry as told), or what happened instead."""
    if response is not None:
        if response.status_code == 503 and "Retry-After" not in response.headers:
            return "503 without Retry-After"
        return str(response.status_code)
    if isinstance(error, requests.Timeout):
        return "timeout"
    text = repr(error)
    if "ConnectionRefused" in text or "Connection refused" in text:
        return "refused"
    if "ConnectionReset" in text or "RemoteDisconnected" in text or "Connection aborted" in text:
        return "reset"
    return "connection error"


def is_failed(answer: str) -> bool:
    """A failed request: no answer at all, or a server error other than 503 with Retry-After."""
    return answer in CONNECTION_ERRORS or (answer[:1] == "5" and answer != "503")


def failed_requests(answers: Mapping[str, int]) -> int:
    return sum(n for answer, n in answers.items() if is_failed(answer))


def answers_between(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """The answers counted from `before` to `after` (two snapshots of `Api.answers`)."""
    return {k: n - before.get(k, 0) for k, n in sorted(after.items()) if n - before.get(k, 0)}


class Endpoints:
    """The API processes as a Kubernetes Service sees them: a backend takes new requests only
    while its readiness (GET /health/ready) answers 200, probed every PROBE_INTERVAL_S, and
    never once it is terminating (the endpoints controller drops a pod being deleted at once).
    With no backend ready it fails open to those that answer at all, as Envoy's panic mode
    does: an outage of the database makes every readiness 503 and the clients should see it."""

    def __init__(self, base_urls: list[str], probe=None):
        self.base_urls = list(base_urls)
        self._probe = probe or _readiness
        self._lock = threading.Lock()
        self._status: dict[str, int | None] = dict.fromkeys(self.base_urls)
        self._terminating: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.probe_all()
        self._thread = threading.Thread(target=self._loop, name="endpoints", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(PROBE_INTERVAL_S):
            self.probe_all()

    def probe_all(self) -> None:
        for base in self.base_urls:
            status = self._probe(base)
            with self._lock:
                if base in self._status:
                    self._status[base] = status

    def add(self, base: str) -> None:
        """A new backend; it takes requests once its readiness says 200."""
        with self._lock:
            self._status[base] = None
            self.base_urls = [*self.base_urls, base]

    def remove(self, base: str) -> None:
        with self._lock:
            self.base_urls = [b for b in self.base_urls if b != base]
            self._status.pop(base, None)
            self._terminating.discard(base)

    def terminating(self, base: str) -> None:
        with self._lock:
            self._terminating.add(base)

    def is_ready(self, base: str) -> bool:
        with self._lock:
            return base not in self._terminating and self._status.get(base) == 200

    def pick(self) -> str:
        with self._lock:
            live = [b for b in self.base_urls if b not in self._terminating]
            ready = [b for b in live if self._status[b] == 200]
            answering = [b for b in live if self._status[b] is not None]
        return random.choice(ready or answering or live or self.base_urls)

    def all(self) -> list[str]:
        with self._lock:
            return list(self.base_urls)


def _readiness(base: str) -> int | None:
    try:
        return requests.get(f"{base}/health/ready", timeout=2).status_code
    except requests.RequestException:
        return None


class Api:
    """The HTTP API of several processes behind `Endpoints`, as a Service spreads it."""

    def __init__(self, base_urls: list[str], env: dict[str, str]):
        self.endpoints = Endpoints(base_urls)
        self.env = env
        self._local = threading.local()
        self._token_lock = threading.Lock()
        self._answers_lock = threading.Lock()
        self.token = fetch_token(env)
        self.answers: Counter = Counter()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def _count(self, answer: str) -> None:
        with self._answers_lock:
            self.answers[answer] += 1

    def answers_now(self) -> dict[str, int]:
        with self._answers_lock:
            return dict(self.answers)

    def call(
        self, method: str, path: str, body: dict | None = None, headers: dict | None = None
    ) -> requests.Response | None:
        """The response, or None when none came (refused, reset, timed out)."""
        headers = dict(headers or {})
        for _ in range(2):
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            base = self.endpoints.pick()
            try:
                response = self._session().request(
                    method, f"{base}{path}", json=body, headers=headers, timeout=TIMEOUT
                )
            except requests.RequestException as error:
                self._local.session = requests.Session()  # drop a half-dead connection pool
                self._count(answer_of(None, error))
                return None
            self._count(answer_of(response))
            if response.status_code != 401 or not self.token:
                return response
            with self._token_lock:  # an expired token: take a fresh one, once
                self.token = fetch_token(self.env)
        return response

    def get(self, path: str, **params) -> list | dict | None:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        response = self.call("GET", f"{path}?{query}" if query else path)
        if response is None or response.status_code != 200:
            return None
        return response.json()

    def ready(self) -> bool:
        """Every API process answers /health/ready with 200."""
        return all(_readiness(base) == 200 for base in self.endpoints.all())


class Load:
    """Students and managers, each thread one at a time, at a given rate of new orders per
    second in all; with no rate, each thread starts its next story as soon as the last one
    ends (a closed loop)."""

    def __init__(self, api: Api, history: History, seed: int):
        self.api = api
        self.history = history
        self.rate: float | None = None
        self.threads = 0
        self.placed = 0  # orders accepted (201), probes included
        self.courses: list[str] = []
        self._rng = random.Random(seed)
        self._phones: set[str] = set()
        self._lock = threading.Lock()
        self._next_slot = time.monotonic()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self.stories: Counter = Counter()

    # Set-up

    def setup(self, courses: int = 20, managers: int = 2) -> None:
        for i in range(courses):
            course_no = f"CH{i:03d}{uuid.uuid4().hex[:6].upper()}"
            body = {
                "course_no": course_no,
                "title": f"카오스 강좌 {i}",
                "description": "chaos suite",
                "category": "chaos",
                "price": 10000 + i,
            }
            self._must("POST", "/courses", body, 201)
            self.courses.append(course_no)
        for i in range(managers):
            body = {"name": f"카오스매니저{i + 1}", "phone": self.new_phone()}
            self._must("POST", "/managers", body, 201)

    def _must(self, method: str, path: str, body: dict, status: int) -> dict:
        deadline = time.monotonic() + 30
        while True:
            response = self.api.call(method, path, body)
            if response is not None and response.status_code == status:
                return response.json()
            if time.monotonic() > deadline:
                got = response.status_code if response is not None else "no answer"
                raise RuntimeError(f"{method} {path}: {got}")
            time.sleep(0.5)

    def new_phone(self) -> str:
        with self._lock:
            while True:
                # 010-2000 to 010-4999: all assigned ranges (the API refuses unused ones).
                phone = f"010-{self._rng.randint(2000, 4999)}-{self._rng.randint(0, 9999):04d}"
                if phone not in self._phones:
                    self._phones.add(phone)
                    return phone

    # Running

    def start(self, rate: float | None, threads: int) -> None:
        """Start (or, after `stop`, start again) at `rate` orders per second, or unpaced with
        None."""
        self.rate, self.threads = rate, threads
        self._stop.clear()
        self._workers = []
        self._next_slot = time.monotonic()
        for i in range(self.threads):
            thread = threading.Thread(
                target=self._run,
                args=(random.Random(self._rng.random()),),
                name=f"load-{i}",
                daemon=True,
            )
            thread.start()
            self._workers.append(thread)

    def stop(self, timeout_s: float = 60) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._workers:
            thread.join(max(0.1, deadline - time.monotonic()))

    def _pace(self) -> None:
        if self.rate is None:
            return
        with self._lock:
            slot = max(self._next_slot, time.monotonic())
            self._next_slot = slot + 1.0 / self.rate
        self._stop.wait(max(0.0, slot - time.monotonic()))

    def _run(self, rng: random.Random) -> None:
        while not self._stop.is_set():
            self._pace()
            if self._stop.is_set():
                return
            try:
                story = self._story(rng)
            except Exception as exc:  # noqa: BLE001 - one broken story must not end the load
                story = f"error {exc.__class__.__name__}"
            with self._lock:
                self.stories[story] += 1

    def _story(self, rng: random.Random) -> str:
        """One student's order and what happens to it; returns the story's name."""
        order = self.history.new_order(
            str(uuid.uuid4()), self.new_phone(), rng.choice(self.courses)
        )
        if not self.place(order):
            return "not placed"
        fate = rng.random()
        if fate < 0.25:
            return "ordered"
        if fate < 0.40:
            # Cancelled at once: often before learning has started.
            time.sleep(rng.uniform(0, 0.5))
            self.cancel(order)
            return "cancelled early"
        evaluation = self.wait_evaluation(order, 20)
        if evaluation is None:
            return "no evaluation in time"
        for _ in range(rng.choice((0, 1, 1, 2))):
            self.record(order, evaluation, rng.randint(0, 100))
        score = rng.randint(0, 100)
        if fate < 0.80:
            self.final(order, evaluation, score)
            return "completed"
        if fate < 0.90:
            racer = threading.Thread(target=self.cancel, args=(order,))
            racer.start()
            self.final(order, evaluation, score)
            racer.join()
            return "final raced cancel"
        self.cancel(order)
        return "cancelled while learning"

    # Commands (each one retried while it is safe to)

    def place(self, order: OrderHistory, window_s: float = RETRY_WINDOW_S) -> bool:
        response = self.send_order(order, window_s)
        if response is None or response.status_code != 201:
            return False
        with self._lock:
            self.placed += 1
        return True

    def send_order(
        self, order: OrderHistory, window_s: float = RETRY_WINDOW_S, **extra
    ) -> requests.Response | None:
        """POST /orders (with `extra` in the body), retried under the same key while it is
        safe to; the last answer: a 201, a refusal for good, or what came at the deadline."""
        body = {
            "course_no": order.course_no,
            "phone": order.phone,
            "begin_date": "2026-12-01",
            "end_date": "2027-02-28",
            **extra,
        }
        deadline = time.monotonic() + window_s
        while True:
            response = self.api.call("POST", "/orders", body, {"Idempotency-Key": order.key})
            status = response.status_code if response is not None else None
            order.answers.append(status)
            if status == 201:
                order.order_no = response.json()["order_no"]
                return response
            if status is not None and 400 <= status < 500 and status != 429:
                return response  # refused for good
            if time.monotonic() > deadline:
                return response
            # The same key again: a retried create returns the first order, never a second.
            time.sleep(_retry_after(response))

    def record(self, order: OrderHistory, evaluation: dict, score: int) -> None:
        # Not idempotent: sent once; a lost answer leaves it indeterminate.
        command = Command("record", score)
        order.commands.append(command)
        response = self.api.call(
            "POST", f"/evaluations/{evaluation['id']}/records", {"score": score, "comment": "c"}
        )
        command.answers.append(response.status_code if response is not None else None)

    def final(self, order: OrderHistory, evaluation: dict, score: int) -> None:
        command = Command("final", score)
        order.commands.append(command)
        # The same final score again is 200 (SPEC 6), so retrying is safe.
        self._retry(command, f"/evaluations/{evaluation['id']}/final", {"score": score})

    def cancel(self, order: OrderHistory) -> None:
        command = Command("cancel")
        order.commands.append(command)
        self._retry(command, f"/orders/{order.order_no}/cancel", {})

    def _retry(self, command: Command, path: str, body: dict) -> None:
        deadline = time.monotonic() + RETRY_WINDOW_S
        while True:
            response = self.api.call("POST", path, body)
            status = response.status_code if response is not None else None
            command.answers.append(status)
            if status is not None and status < 500 and status != 429:
                return
            if time.monotonic() > deadline:
                return
            time.sleep(_retry_after(response))

    def wait_evaluation(self, order: OrderHistory, timeout_s: float) -> dict | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self._stop.is_set():
            found = self.api.get("/evaluations", order_no=order.order_no)
            if found:
                return found[0] if found[0]["status"] == "IN_PROGRESS" else None
            time.sleep(0.3)
        return None

    # Probes of recovery

    def probe(self) -> OrderHistory:
        """Place a probe order (retried for up to a minute); it stays ORDERED."""
        order = self.history.new_order(
            str(uuid.uuid4()), self.new_phone(), self._rng.choice(self.courses), probe=True
        )
        self.place(order, window_s=60)
        return order

    def processed(self, order: OrderHistory) -> bool:
        """Its learning STARTED and My page shows it."""
        if not order.order_no:
            return False
        learnings = self.api.get("/learnings", order_no=order.order_no)
        if not learnings or learnings[0]["status"] != "STARTED":
            return False
        rows = self.api.get(f"/mypage/{order.phone}") or []
        return any(
            r["order_no"] == order.order_no
            and (r["order_status"], r["learning_status"]) == ("ORDERED", "STARTED")
            for r in rows
        )


def _retry_after(response: requests.Response | None) -> float:
    if response is not None and response.headers.get("Retry-After", "").isdigit():
        return min(2.0, float(response.headers["Retry-After"]))
    return 0.3
