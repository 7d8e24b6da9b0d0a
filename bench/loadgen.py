"""A cheap multiprocess HTTP/1.1 load generator over raw sockets.

On a 2-core machine every cycle the client burns is taken from the system under test, so each
client process is a tight blocking loop: a prebuilt request, `sendall`, read the head, read
`Content-Length` bytes. Keep-alive is used when the server keeps the connection (gunicorn's sync
workers close it after each answer, so the client reconnects then, as any client must).

Three shapes of load:
- closed loop: each process sends its next request as soon as the previous answered;
- open loop: each process sends at a fixed rate on a schedule, whatever the answers;
- gated closed loop: a closed loop that waits while a shared flag says "hold" (the caller keeps
  the system's backlog bounded with it).

Each process returns its samples: (send wall time, latency seconds, status, tag).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import jwt


def order_phone(index: int) -> str:
    """A unique, valid Korean mobile number per order (010-3000-0000 onwards)."""
    return f"010-{3000 + index // 10000}-{index % 10000:04d}"


def mypage_phone(index: int) -> str:
    """The phones of the bulk-loaded My page rows (010-2000-0000 onwards)."""
    return f"010-{2000 + index // 10000}-{index % 10000:04d}"


@dataclass
class Spec:
    """What one run of the load generator sends."""

    base_url: str
    kind: str  # "get" | "order" | "final"
    processes: int = 8
    duration_s: float | None = None  # stop after this long...
    count: int | None = None  # ...or after this many requests in all
    rate_per_s: float | None = None  # open loop at this total rate; None: closed loop
    token: str | None = None
    # Kind "order": each order carries a token of the student whose phone it orders for,
    # signed with this secret as the identity provider would (HS256), rather than `token`:
    # the API then verifies a new token and counts the order limit, as for real students.
    student_secret: str | None = None
    paths: list[str] = field(default_factory=list)  # kind "get": chosen at random
    phone_base: int = 0  # kind "order": phone indexes start here, one per request
    course_no: str = "BENCH1"
    idempotency_keys: bool = True
    evaluation_ids: list[int] = field(default_factory=list)  # kind "final": one each
    score: int = 88
    gate: object = None  # an mp.Value('b'): 1 = go, 0 = hold (gated closed loop)
    notify: object = None  # an mp.Queue: (tag, sent at) of each 201, as it is answered
    seed: int = 1
    # Kind "order": every other order (odd phone indexes) asks for the waitlist (SPEC 11).
    waitlist_half: bool = False
    # Each sample's tag becomes (tag, body, Retry-After or None): what the client was told.
    keep_answers: bool = False


Sample = tuple[float, float, int, object]  # (sent at, latency s, status, tag)


def _headers(host: str, token: str | None) -> str:
    head = f"Host: {host}\r\nUser-Agent: onlinestudy-bench\r\nAccept: application/json\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    return head


def student_token(secret: str, phone: str, now: int) -> str:
    """A student's token in the shape the API verifies (app.security: sub, role, phone, iss)."""
    claims = {"sub": f"student:{phone}", "role": "student", "phone": phone, "iss": "onlinestudy"}
    return jwt.encode({**claims, "iat": now, "exp": now + 3600}, secret, algorithm="HS256")


def _request_maker(spec: Spec, worker: int) -> Callable[[int], tuple[bytes, object] | None]:
    """Returns make(n) -> (request bytes, tag) for this process's n-th request, or None when it
    has nothing more to send."""
    url = urlsplit(spec.base_url)
    host = url.netloc
    common = _headers(host, spec.token)
    rng = random.Random(spec.seed * 1000 + worker)

    if spec.kind == "get":
        prebuilt = [(f"GET {p} HTTP/1.1\r\n{common}\r\n".encode(), p) for p in spec.paths or ["/"]]

        def make_get(_n: int):
            return prebuilt[rng.randrange(len(prebuilt))]

        return make_get

    if spec.kind == "order":
        stride = spec.processes
        anonymous = _headers(host, None)

        def make_order(n: int):
            index = spec.phone_base + n * stride + worker
            phone = order_phone(index)
            if spec.student_secret:
                token = student_token(spec.student_secret, phone, int(time.time()))
                auth = f"{anonymous}Authorization: Bearer {token}\r\n"
            else:
                auth = common
            waitlist = ',"waitlist":true' if spec.waitlist_half and index % 2 else ""
            body = (
                f'{{"course_no":"{spec.course_no}","phone":"{phone}",'
                f'"begin_date":"2026-12-01","end_date":"2027-02-28"{waitlist}}}'
            ).encode()
            extra = f"Idempotency-Key: bench-{index}\r\n" if spec.idempotency_keys else ""
            head = (
                f"POST /orders HTTP/1.1\r\n{auth}{extra}Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            return head + body, index

        return make_order

    if spec.kind == "final":
        mine = spec.evaluation_ids[worker :: spec.processes]
        body = f'{{"score":{spec.score}}}'.encode()

        def make_final(n: int):
            if n >= len(mine):
                return None
            head = (
                f"POST /evaluations/{mine[n]}/final HTTP/1.1\r\n{common}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            return head + body, mine[n]

        return make_final

    raise ValueError(f"unknown kind {spec.kind!r}")


_TIMEOUT = struct.pack("ll", 30, 0)  # struct timeval: 30 s


class _Conn:
    def __init__(self, host: str, port: int):
        self.addr = (host, port)
        self.sock: socket.socket | None = None
        self.buf = b""
        self.retry_after: str | None = None  # of the last answer

    def _connect(self) -> socket.socket:
        # A plain blocking socket (no Python-level timeout: that would add a poll() per call);
        # the kernel's SO_RCVTIMEO/SO_SNDTIMEO bound a hung server instead.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEOUT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _TIMEOUT)
        sock.connect(self.addr)
        self.buf = b""
        return sock

    def request(self, data: bytes) -> tuple[int, bytes]:
        for attempt in (0, 1):
            fresh = self.sock is None
            if fresh:
                self.sock = self._connect()
            try:
                self.sock.sendall(data)
                return self._read()
            except (ConnectionError, TimeoutError, OSError):
                self.close()
                if fresh or attempt:
                    raise
        raise RuntimeError("unreachable")

    def _read(self) -> tuple[int, bytes]:
        sock, buf = self.sock, self.buf
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("closed before the answer's head")
            buf += chunk
        head = buf[:end].decode("latin-1")
        buf = buf[end + 4 :]
        lines = head.split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, close = None, False
        self.retry_after = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "retry-after":
                self.retry_after = value.strip()
            elif name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        if length is None:  # read to the end
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
            body, buf, close = buf, b"", True
        else:
            while len(buf) < length:
                chunk = sock.recv(max(65536, length - len(buf)))
                if not chunk:
                    raise ConnectionResetError("closed in the body")
                buf += chunk
            body, buf = buf[:length], buf[length:]
        self.buf = buf
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None
                self.buf = b""


def _worker(spec: Spec, worker: int, start_at: float, out) -> None:
    url = urlsplit(spec.base_url)
    conn = _Conn(url.hostname, url.port or 80)
    make = _request_maker(spec, worker)
    samples: list[Sample] = []
    per_process_count = None
    if spec.count is not None:
        per_process_count = spec.count // spec.processes + (
            1 if worker < spec.count % spec.processes else 0
        )
    interval = None
    if spec.rate_per_s:
        interval = spec.processes / spec.rate_per_s
    gate = spec.gate
    now = time.time()
    if start_at > now:
        time.sleep(start_at - now)
    t0 = time.perf_counter()
    wall0 = time.time()
    deadline = t0 + spec.duration_s if spec.duration_s else None
    # Open loop: the processes' schedules are interleaved evenly.
    next_at = t0 + (interval * worker / spec.processes if interval else 0.0)
    n = 0
    errors = 0
    perf, wall_offset = time.perf_counter, wall0 - t0
    while True:
        if per_process_count is not None and n >= per_process_count:
            break
        if interval:
            now_p = perf()
            if deadline and next_at >= deadline:
                break
            if next_at > now_p:
                time.sleep(next_at - now_p)
        elif deadline and perf() >= deadline:
            break
        if gate is not None:
            while not gate.value:
                time.sleep(0.002)
                if deadline and perf() >= deadline:
                    break
            if deadline and perf() >= deadline:
                break
        made = make(n)
        if made is None:
            break
        data, tag = made
        sent = perf()
        body = b""
        try:
            status, body = conn.request(data)
        except Exception:  # noqa: BLE001 - count it and go on
            status = 0
            errors += 1
            conn.close()
            if errors > 1000:
                break
        done = perf()
        if spec.keep_answers:
            tag = (tag, body.decode(errors="replace"), conn.retry_after if status else None)
        samples.append((sent + wall_offset, done - sent, status, tag))
        if spec.notify is not None and status == 201:
            spec.notify.put((tag, sent + wall_offset))
        n += 1
        if interval:
            next_at += interval
    conn.close()
    out.send(samples)
    out.close()


@dataclass
class Result:
    samples: list[Sample]
    wall_s: float  # from the first send to the last answer
    client_cpu_s: float

    def ok(self, statuses: tuple[int, ...]) -> list[Sample]:
        return [s for s in self.samples if s[2] in statuses]

    def statuses(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for s in self.samples:
            counts[s[2]] = counts.get(s[2], 0) + 1
        return counts


def run(spec: Spec, start_at: float | None = None) -> Result:
    """Run the load in `spec.processes` forked processes, all starting at `start_at` (wall
    clock; default: in 0.3 s); returns every sample."""
    ctx = mp.get_context("fork")
    start_at = start_at or time.time() + 0.3
    procs, pipes = [], []
    for worker in range(spec.processes):
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker, args=(spec, worker, start_at, child), daemon=True)
        p.start()
        child.close()
        procs.append(p)
        pipes.append(parent)
    samples: list[Sample] = []
    cpu = 0.0
    import psutil

    handles = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            handles.append(psutil.Process(p.pid))
    last_cpu = {h.pid: 0.0 for h in handles}
    for parent in pipes:
        while not parent.poll(0.5):
            for h in handles:
                try:
                    t = h.cpu_times()
                    last_cpu[h.pid] = t.user + t.system
                except psutil.Error:
                    pass
        samples.extend(parent.recv())
    for p in procs:
        p.join(10)
    cpu = sum(last_cpu.values())
    if samples:
        first = min(s[0] for s in samples)
        last = max(s[0] + s[1] for s in samples)
        wall = last - first
    else:
        wall = 0.0
    return Result(samples, wall, cpu)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def window(samples: list[Sample], start: float, end: float) -> list[Sample]:
    """The samples sent within [start, end) (wall clock)."""
    return [s for s in samples if start <= s[0] < end]


if __name__ == "__main__":  # a smoke test against any URL: python -m bench.loadgen URL
    import sys

    url = sys.argv[1]
    procs = int(os.environ.get("P", "4"))
    r = run(Spec(url, "get", processes=procs, duration_s=3, paths=[urlsplit(url).path or "/"]))
    print(len(r.samples) / r.wall_s, "req/s", r.statuses(), "client cpu", r.client_cpu_s)
