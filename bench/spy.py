"""Summarize py-spy raw (collapsed) profiles: where the processes of the system spend their CPU.

    python -m bench --spy var/bench/spy        # records during the sustained run
    python -m bench.spy var/bench/spy/*.txt    # this summary

py-spy without --idle samples only threads that are running, so a share here is a share of the
process tree's CPU time. Inclusive: the samples with the frame anywhere on the stack.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

# Named costs: a sample counts for a name when any frame on its stack matches.
PATTERNS = {
    "consumer: _apply (one transaction per batch)": r"^_apply \(app/consumer",
    "consumer: claim_all INSERT (processed messages)": r"^claim_all ",
    "consumer: policy handler": (
        r"^(open_learnings|open_evaluations|project|record_sms|complete_learning"
        r"|finalize_on_order_completed|cancel_learning|cancel_evaluation"
        r"|start_waiting_learnings) \(app/"
    ),
    "consumer: managers by load": r"^ManagerRepository.by_load ",
    "consumer: uow.commit (outbox write + COMMIT)": r"^UnitOfWork.commit ",
    "consumer: OutboxWriter.write": r"^OutboxWriter.write ",
    "consumer: after_commit SMS send (2nd txn)": r"^send_pending_sms ",
    "consumer: record_done UPDATE + COMMIT": r"^record_done ",
    "consumer: Event.from_envelope": r"^Event.from_envelope ",
    "relay: claim_due SELECT ... FOR UPDATE": r"^claim_due ",
    "relay: send_task (publish)": r"^Celery.send_task ",
    "relay: task-sent event publish": (
        r"^AMQP._create_task_sender.<locals>.send_task_message .*;EventDispatcher.publish"
    ),
    "relay: session.commit": r"^relay_once .*;Session.commit",
    "relay: waiting for NOTIFY": r"^Waker.wait ",
    "celery: task events (task-received/started/succeeded)": r"^EventDispatcher\.(publish|send) ",
    "celery: worker main loop / kombu consume": r"^(Consumer.start|asynloop|Hub.create_loop) ",
    "celery: trace/task protocol (pool child)": (
        r"^(trace_task|build_tracer.<locals>.trace_task|fast_trace_task) "
    ),
    "celery: task_postrun/prerun signals (metrics)": (
        r"^(_task_finished|_task_started|record_task) "
    ),
    "prometheus multiprocess metric writes": r"prometheus_client/(values|mmap_dict)\.py",
    "logging (structlog + stdlib)": r"structlog/|^Logger\.(info|_log|handle) \(logging",
    "SQLAlchemy session/engine (all DB work in Python)": r"sqlalchemy/",
    "SQLAlchemy pool checkout + pre-ping": r"^(_ConnectionFairy._checkout|\S*do_ping) ",
    "psycopg (driver)": r"psycopg/",
    "new DB connections (connect)": r"^(Connection.connect \(psycopg|__connect )",
    "redis-py": r"redis/",
    "kombu": r"kombu/",
    "json encode/decode": r"^(dumps|loads|JSONEncoder\.|JSONDecoder\.|encode \(json|decode \(json)",
    "marshmallow (schemas)": r"marshmallow/",
    "flask + werkzeug": r"(flask|werkzeug)/",
    "flask_smorest": r"flask_smorest/",
    "phonenumbers": r"phonenumbers/",
    "jwt verify": r"^Tokens.verify ",
    "rate limiter (flask_limiter/limits)": r"(flask_limiter/|limits/)",
    "gunicorn (accept/parse/write)": r"gunicorn/",
    "learning_backlog count": r"^Container.learning_overloaded ",
    "place_order handler": r"^place_order \(app/orders",
}


def _frame_key(frame: str) -> str:
    # "func (path/file.py:123)" -> "func (path/file.py)"
    return re.sub(r":\d+\)$", ")", frame)


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        head, _, count = line.rpartition(" ")
        if not head or not count.isdigit():
            continue
        frames = [_frame_key(f) for f in head.split(";")]
        stacks.append((frames, int(count)))
    return stacks


def summarize(path: Path, top: int = 25) -> str:
    stacks = load(path)
    total = sum(c for _, c in stacks)
    if not total:
        return f"{path.name}: no samples"
    out = [f"== {path.name}: {total} samples (on-CPU) =="]
    per_process = Counter()
    for frames, c in stacks:
        per_process[frames[0].split(":")[0] + ":" + frames[0].split(":", 1)[1][:60]] += c
    for proc, c in per_process.most_common(8):
        out.append(f"  {100 * c / total:5.1f}%  {proc}")
    out.append("  -- named costs (inclusive) --")
    compiled = {name: re.compile(rx) for name, rx in PATTERNS.items()}
    for name, rx in compiled.items():
        hit = sum(
            c
            for frames, c in stacks
            if any(rx.search(";".join(frames[i : i + 2])) for i in range(1, len(frames)))
        )
        if hit:
            out.append(f"  {100 * hit / total:5.1f}%  {name}")
    inclusive, self_ = Counter(), Counter()
    for frames, c in stacks:
        for f in set(frames[1:]):
            inclusive[f] += c
        self_[frames[-1]] += c
    out.append("  -- top inclusive frames of app/ and workers/ --")
    app = [(f, c) for f, c in inclusive.items() if "(app/" in f or "(workers/" in f]
    for f, c in sorted(app, key=lambda kv: -kv[1])[:top]:
        out.append(f"  {100 * c / total:5.1f}%  {f}")
    out.append("  -- top self frames --")
    for f, c in self_.most_common(top):
        out.append(f"  {100 * c / total:5.1f}%  {f}")
    return "\n".join(out)


def main(paths: list[str]) -> None:
    for p in paths:
        print(summarize(Path(p)))
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
