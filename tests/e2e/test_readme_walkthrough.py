"""The README's walk through, run as written against the embedded system, so the README stays
true: the bash blocks between its walkthrough markers, in one shell, as a user pastes them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import assert_ready, embedded_env, free_port, start_embedded
from tests.helpers import eventually

README = Path(__file__).resolve().parents[2] / "README.md"
README_API = "api=http://127.0.0.1:8088"


def walkthrough_blocks() -> list[str]:
    text = README.read_text()
    section = re.search(r"<!-- walkthrough:start -->(.*?)<!-- walkthrough:end -->", text, re.S)
    assert section, "the README marks its walk through"
    blocks = re.findall(r"^```bash\n(.*?)^```$", section.group(1), re.S | re.M)
    assert blocks, "the walk through has bash blocks"
    return blocks


def test_the_readme_walkthrough_works_as_written(tmp_path):
    blocks = walkthrough_blocks()
    assert blocks[0].splitlines()[0] == README_API, "the walk through starts by naming the API"
    port = free_port()
    script = "\n".join(blocks).replace(README_API, f"api=http://127.0.0.1:{port}", 1)

    env = embedded_env()
    env["ONLINESTUDY_VAR_DIR"] = str(tmp_path / "var")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    run = start_embedded(tmp_path, port, env)
    try:
        eventually(lambda: assert_ready(f"http://127.0.0.1:{port}"), timeout_s=60)
        walk = subprocess.run(
            ["bash", "-c", f"set -euo pipefail\n{script}"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert walk.returncode == 0, (
            f"stdout:\n{walk.stdout[-3000:]}\nstderr:\n{walk.stderr[-3000:]}\n"
            f"run.log:\n{(tmp_path / 'run.log').read_text(errors='replace')[-3000:]}"
        )
    finally:
        os.killpg(run.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        run.wait(timeout=60)

    lines = walk.stdout.splitlines()
    answers = [json.loads(line) for line in lines if line.startswith(("[", "{"))]

    # The catalog search found the Python course only.
    search = next(answer for answer in answers if isinstance(answer, list))
    assert [course["course_no"] for course in search] == ["PY101"]
    assert any(line.startswith("X-Pagination:") for line in lines)

    # The same final score again: 200; another one: 409; cancelling the completed order: 409.
    codes = [line for line in lines if re.fullmatch(r"\d{3}", line)]
    assert codes == ["200", "409", "409"]

    # The course of one seat: sold out, then a place in the waitlist, then the freed seat.
    sold_out = next(a for a in answers if isinstance(a, dict) and a.get("code") == 409)
    assert (sold_out["status"], sold_out["message"]) == ("SOLD_OUT", "정원이 마감되었습니다")
    live = [a for a in answers if isinstance(a, dict) and a.get("course_no") == "LIVE1"]
    waited = [a for a in live if a.get("phone") == "010-4444-5555" and "order_no" in a]
    assert [(a["status"], a["waitlist_position"]) for a in waited] == [
        ("WAITLISTED", 1),
        ("ORDERED", None),
    ]

    # The SMS list has every milestone's text, all sent.
    sms, mypage = answers[-2], answers[-1]
    texts = " ".join(message["message"] for message in sms)
    for text in ("강좌 주문이 접수", "학습관리 시작", "김매니저", "수료", "88점", "강좌 주문 취소"):
        assert text in texts
    assert {message["status"] for message in sms} == {"SENT"}

    # My page: the cancelled order first (newest), then the completed one with its score.
    assert [row["course_no"] for row in mypage] == ["DB101", "PY101"]
    cancelled, completed = mypage
    assert cancelled["order_status"] == "CANCELLED"
    assert completed["order_status"] == "COMPLETED"
    assert completed["learning_status"] == "COMPLETED"
    assert completed["evaluation_status"] == "FINAL"
    assert (completed["final_score"], completed["latest_score"]) == (88, 70)
    assert completed["manager_name"] == "김매니저"

    assert lines[-1] == "no dead letters"
