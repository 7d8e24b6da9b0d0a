#!/usr/bin/env bash
# Smoke test of the embedded default, as a user would do it: start `onlinestudy run` (SQLite,
# server-less broker), order a course with curl, see the My page row, stop with Ctrl-C (SIGINT).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
port=${SMOKE_PORT:-18088}
base="http://127.0.0.1:$port"
phone="010-$((RANDOM % 3000 + 2000))-$((RANDOM % 9000 + 1000))"
course="SMOKE$RANDOM"

# The embedded default: none of the server settings may leak in from the environment.
unset DATABASE_URL NOTIFICATION_DATABASE_URL CELERY_BROKER_URL CELERY_RESULT_BACKEND ONLINESTUDY_VAR_DIR
cd "$work"
setsid "$root/.venv/bin/onlinestudy" run --port "$port" >"$work/run.log" 2>&1 &
run_pid=$!
stop() { kill -INT -- "-$run_pid" 2>/dev/null || true; wait "$run_pid" 2>/dev/null || true; }
trap 'stop; echo "--- run.log (tail)"; tail -40 "$work/run.log"' ERR

for _ in $(seq 1 120); do curl -fs "$base/health/ready" >/dev/null && break; sleep 0.5; done
curl -fs "$base/health/ready"; echo
json='content-type: application/json'
# Without a token: 401. With one made by `onlinestudy token` in the same folder: allowed.
test "$(curl -s -o /dev/null -w '%{http_code}' "$base/orders")" = 401
auth="Authorization: Bearer $("$root/.venv/bin/onlinestudy" token --role admin | tail -1)"
curl -fs -XPOST "$base/managers" -H "$auth" -H "$json" -d '{"name":"스모크매니저","phone":"010-1000-2000"}'; echo
curl -fs -XPOST "$base/courses" -H "$auth" -H "$json" \
  -d "{\"course_no\":\"$course\",\"title\":\"스모크 강좌\",\"price\":1000}"; echo
curl -fs -XPOST "$base/orders" -H "$auth" -H "$json" \
  -d "{\"course_no\":\"$course\",\"phone\":\"$phone\",\"begin_date\":\"2026-12-01\",\"end_date\":\"2026-12-31\"}"; echo

row=""
for _ in $(seq 1 100); do
  row=$(curl -fs -H "$auth" "$base/mypage/$phone")
  grep -q '"learning_status":"STARTED"' <<<"$row" && break
  sleep 0.2
done
echo "My page: $row"
grep -q '"learning_status":"STARTED"' <<<"$row"
grep -q '"manager_name":"스모크매니저"' <<<"$row"

kill -INT -- "-$run_pid"
wait "$run_pid"
# A grandchild (a gunicorn or Celery pool process) may still be exiting when its parent has
# gone: give the group a few seconds to empty, then name whatever is left.
for _ in $(seq 1 20); do pgrep -g "$run_pid" >/dev/null || break; sleep 0.25; done
if pgrep -g "$run_pid" >/dev/null; then
  echo "processes left behind after Ctrl-C:" >&2; pgrep -a -g "$run_pid" >&2; exit 1
fi
rm -rf "$work"
echo "smoke: embedded default OK (ordered, My page current, stopped cleanly)"
