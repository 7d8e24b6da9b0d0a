"""Shared facts for the deployment tests: the repository and what the project's commands are."""

from __future__ import annotations

import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

QUEUES = ("orders", "learning", "evaluation", "notification", "mypage")

# The `onlinestudy` CLI's subcommands (SPEC section 10 and the operators' tools).
ONLINESTUDY_SUBCOMMANDS = frozenset(
    {
        "run",
        "worker",
        "relay",
        "db upgrade",
        "events dead",
        "events replay",
        "health worker",
        "health relay",
        "mypage rebuild",
        "flower",
    }
)

GUNICORN_TARGET = "app:create_app()"
CELERY_APP = "workers.celery_app"
API_PORT = 8088


def argv_of(command: str | list[str]) -> list[str]:
    """A command as compose or Kubernetes holds it (a string or a list), as an argv list."""
    if isinstance(command, str):
        return shlex.split(command)
    return [str(word) for word in command]


def option_values(argv: list[str], name: str) -> list[str]:
    """Values of `--name value` and `--name=value` in argv."""
    values = []
    for i, word in enumerate(argv):
        if word == name and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif word.startswith(name + "="):
            values.append(word.split("=", 1)[1])
    return values


def queues_consumed(argv: list[str]) -> list[str]:
    """The queues an `onlinestudy worker --queues a,b` command consumes."""
    return [q for value in option_values(argv, "--queues") for q in value.split(",") if q]


def problems_with_command(command: str | list[str]) -> list[str]:
    """Why a service's command would not run this project's code (empty when it would)."""
    argv = argv_of(command)
    if not argv:
        return ["empty command"]
    program = argv[0]
    if program == "onlinestudy":
        words = []
        for word in argv[1:]:
            if word.startswith("-"):
                break
            words.append(word)
        sub = " ".join(words)
        if sub not in ONLINESTUDY_SUBCOMMANDS:
            return [f"`onlinestudy {sub}` is not one of {sorted(ONLINESTUDY_SUBCOMMANDS)}"]
        if sub == "worker":
            queues = queues_consumed(argv)
            if not queues:
                return ["`onlinestudy worker` without --queues"]
            unknown = sorted(set(queues) - set(QUEUES))
            if unknown:
                return [f"unknown queues {unknown}; queues are {QUEUES}"]
        return []
    if program == "gunicorn":
        problems = []
        if argv[-1] != GUNICORN_TARGET:
            problems.append(f"gunicorn serves {argv[-1]!r}, not {GUNICORN_TARGET!r}")
        binds = option_values(argv, "--bind") + option_values(argv, "-b")
        if not binds or not all(b.endswith(f":{API_PORT}") for b in binds):
            problems.append(f"gunicorn binds {binds}, not port {API_PORT}")
        if option_values(argv, "--access-logfile") != ["-"]:
            problems.append("gunicorn writes no access log to stdout (--access-logfile -)")
        return problems
    if program == "celery":
        apps = option_values(argv, "-A") + option_values(argv, "--app")
        if apps != [CELERY_APP]:
            return [f"celery app {apps}, not {CELERY_APP!r}"]
        return []
    return [f"{program!r} is not a command of this project"]
