"""`onlinestudy run`: no server needed, the slice works, and Ctrl-C stops every process."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys

import requests

from tests.e2e.conftest import assert_ready, embedded_env, free_port, start_embedded
from tests.helpers import course_body, eventually, order_body, random_phone


def test_the_embedded_default_runs_the_slice_and_stops_on_ctrl_c(tmp_path):
    env = embedded_env()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    run = start_embedded(tmp_path, port, env)
    try:
        eventually(lambda: assert_ready(base), timeout_s=60)
        # A token as the README says: `onlinestudy token`, in the same folder as the system.
        issued = subprocess.run(
            [sys.executable, "-m", "app.cli", "token", "--role", "admin"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {issued.stdout.strip().splitlines()[-1]}"
        assert requests.get(f"{base}/orders", timeout=10).status_code == 401
        http.post(
            f"{base}/managers", json={"name": "임매니저", "phone": random_phone()}, timeout=10
        ).raise_for_status()
        course = http.post(f"{base}/courses", json=course_body(), timeout=10).json()
        phone = random_phone()
        order = http.post(
            f"{base}/orders", json=order_body(course["course_no"], phone=phone), timeout=10
        )
        assert order.status_code == 201

        def on_my_page():
            rows = http.get(f"{base}/mypage/{phone}", timeout=10).json()
            assert len(rows) == 1
            row = rows[0]
            assert row["learning_status"] == "STARTED" and row["manager_name"] == "임매니저"

        eventually(on_my_page, timeout_s=30)
        sms = http.get(f"{base}/sms", params={"phone": phone}, timeout=10)
        assert sms.status_code == 200

        def its_evaluation():
            found = http.get(
                f"{base}/evaluations", params={"order_no": order.json()["order_no"]}, timeout=10
            ).json()
            assert len(found) == 1
            return found[0]

        evaluation = eventually(its_evaluation, timeout_s=30)
        final = http.post(
            f"{base}/evaluations/{evaluation['id']}/final", json={"score": 90}, timeout=30
        )
        assert (final.status_code, final.json()["status"]) == (200, "FINAL")
        # The chain's answer is deleted once read: the embedded result store (SQLite) keeps
        # what it is given for ever.
        with sqlite3.connect(tmp_path / "var" / "celery-results.sqlite") as results:
            assert results.execute("SELECT count(*) FROM celery_taskmeta").fetchone() == (0,)
        assert (tmp_path / "var" / "onlinestudy.sqlite").exists()
        assert (tmp_path / "var" / "notification.sqlite").exists()
    finally:
        os.killpg(run.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        assert run.wait(timeout=60) == 0, (tmp_path / "run.log").read_text()[-3000:]
    # The access log has GET /mypage/<phone> and GET /sms?phone=<phone>, the SMS log its
    # recipient: every one masked.
    log = (tmp_path / "run.log").read_text()
    assert f"GET /mypage/{phone[:4]}****{phone[-5:]}" in log
    for unmasked in (phone, phone.replace("-", ""), phone.replace("-", "%2D")):
        assert unmasked not in log

    def all_gone():
        try:
            os.killpg(run.pid, 0)
        except ProcessLookupError:
            return
        raise AssertionError("a child of `onlinestudy run` is still running")

    eventually(all_gone, timeout_s=20)
