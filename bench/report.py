"""Ratios to the baselines, the performance goals, and the printed table."""

from __future__ import annotations


def _ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return round(a / b, 3)


def with_ratios(results: dict) -> dict:
    """The results plus `ratios`: throughputs against the baseline rates (hello-JSON for the
    HTTP figures, Celery no-op for the pipeline's), latencies against hello's latency."""
    r = results
    ratios = {
        "orders_post_vs_hello": _ratio(r.get("orders_post_per_s"), r.get("hello_per_s")),
        "orders_floor_vs_hello": _ratio(r.get("orders_floor_per_s"), r.get("hello_per_s")),
        "orders_post_vs_floor": _ratio(r.get("orders_post_per_s"), r.get("orders_floor_per_s")),
        "orders_post_p50_vs_hello_p50": _ratio(r.get("orders_post_p50_ms"), r.get("hello_p50_ms")),
        "orders_post_p99_vs_hello_p99": _ratio(r.get("orders_post_p99_ms"), r.get("hello_p99_ms")),
        # Tracing on over tracing off, the same run.
        "orders_post_traced_vs_untraced": _ratio(
            r.get("orders_post_traced_per_s"), r.get("orders_post_per_s")
        ),
        "orders_post_traced_p99_vs_untraced": _ratio(
            r.get("orders_post_traced_p99_ms"), r.get("orders_post_p99_ms")
        ),
        "e2e_vs_celery_noop": _ratio(r.get("e2e_orders_per_s"), r.get("celery_noop_per_s")),
        "e2e_vs_hello": _ratio(r.get("e2e_orders_per_s"), r.get("hello_per_s")),
        "post_to_mypage_p99_vs_hello_p99": _ratio(
            r.get("post_to_mypage_p99_ms"), r.get("hello_p99_ms")
        ),
        "final_p99_vs_hello_p99": _ratio(r.get("final_p99_ms"), r.get("hello_p99_ms")),
        "mypage_get_p99_10k_vs_hello_p99": _ratio(
            r.get("mypage_get_p99_ms_10k"), r.get("hello_p99_ms")
        ),
        "mypage_get_p99_1m_vs_hello_p99": _ratio(
            r.get("mypage_get_p99_ms_1m"), r.get("hello_p99_ms")
        ),
        "mypage_get_1m_vs_10k": _ratio(
            r.get("mypage_get_p99_ms_1m"), r.get("mypage_get_p99_ms_10k")
        ),
        # Against the orders of the windows in between (bench/rush.py), not the POST phase's.
        "rush_sold_out_vs_post": _ratio(r.get("rush_sold_out_per_s"), r.get("rush_orders_per_s")),
        "rush_sold_out_vs_hello": _ratio(r.get("rush_sold_out_per_s"), r.get("hello_per_s")),
    }
    return {**results, "ratios": {**ratios, **history_ratios(results)}}


# With --history: each figure on top of the history over the same figure on the empty database
# of the same run (ratio key, figure).
HISTORY_RATIOS = {
    "history_orders_post_vs_empty": "orders_post_per_s",
    "history_orders_post_p50_vs_empty": "orders_post_p50_ms",
    "history_orders_post_p99_vs_empty": "orders_post_p99_ms",
    "history_e2e_vs_empty": "e2e_orders_per_s",
    "history_cpu_per_order_vs_empty": "cpu_ms_per_order",
    "history_cpu_with_servers_vs_empty": "cpu_ms_per_order_with_servers",
    "history_post_to_mypage_p50_vs_empty": "post_to_mypage_p50_ms",
    "history_post_to_mypage_p99_vs_empty": "post_to_mypage_p99_ms",
    "history_final_p50_vs_empty": "final_p50_ms",
    "history_final_p99_vs_empty": "final_p99_ms",
}


def history_ratios(results: dict) -> dict:
    with_history = results.get("history")
    if not with_history:
        return {}
    return {
        key: _ratio(with_history.get(figure), results.get(figure))
        for key, figure in HISTORY_RATIOS.items()
    }


def _value(document: dict, key: str):
    if key in document:
        return document[key]
    return document.get("ratios", {}).get(key)


def goals(document: dict, targets: dict) -> dict:
    merged = with_ratios(document) if "ratios" not in document else document
    out = {}
    for key, (op, target) in targets.items():
        value = _value(merged, key)
        if value is None:
            met = None
        elif op == ">=":
            met = value >= target
        elif op == "<":
            met = value < target
        elif op == "==":
            met = value == target
        else:
            met = value <= target
        out[key] = {"value": value, "goal": f"{op} {target}", "met": met}
    return out


ROWS = [
    # key, label, unit, ratio key
    ("hello_per_s", "hello-JSON (baseline)", "req/s", None),
    ("celery_noop_per_s", "Celery no-op (baseline)", "tasks/s", None),
    ("orders_floor_per_s", "POST /orders floor (baseline)", "/s", "orders_floor_vs_hello"),
    ("orders_post_per_s", "POST /orders accepted", "/s", "orders_post_vs_hello"),
    ("orders_post_p50_ms", "POST /orders p50", "ms", "orders_post_p50_vs_hello_p50"),
    ("orders_post_p99_ms", "POST /orders p99", "ms", "orders_post_p99_vs_hello_p99"),
    (
        "orders_post_traced_per_s",
        "POST /orders, tracing on",
        "/s",
        "orders_post_traced_vs_untraced",
    ),
    (
        "orders_post_traced_p99_ms",
        "POST /orders p99, tracing on",
        "ms",
        "orders_post_traced_p99_vs_untraced",
    ),
    ("e2e_orders_per_s", "sustained end to end", "orders/s", "e2e_vs_celery_noop"),
    ("post_to_mypage_p50_ms", "POST -> My page p50 (half load)", "ms", None),
    (
        "post_to_mypage_p99_ms",
        "POST -> My page p99 (half load)",
        "ms",
        "post_to_mypage_p99_vs_hello_p99",
    ),
    ("final_p50_ms", "final score p50", "ms", None),
    ("final_p99_ms", "final score p99", "ms", "final_p99_vs_hello_p99"),
    ("mypage_get_p99_ms_10k", "GET /mypage p99, 10k rows", "ms", "mypage_get_p99_10k_vs_hello_p99"),
    ("mypage_get_p99_ms_1m", "GET /mypage p99, large", "ms", "mypage_get_1m_vs_10k"),
    ("rush_seated", "rush: orders ORDERED (100 seats)", "orders", None),
    ("rush_failed_answers", "rush: 5xx, timeouts, resets", "answers", None),
    ("rush_p99_ms", "rush: answer p99", "ms", None),
    ("rush_orders_per_s", "rush: POST /orders between", "/s", None),
    ("rush_sold_out_per_s", "rush: sold-out answers", "/s", "rush_sold_out_vs_post"),
    ("rush_unfair_seat_pairs", "rush: later request seated first", "pairs", None),
    ("rush_unfair_waitlist_pairs", "rush: later request ahead in line", "pairs", None),
    ("rush_promotion_s", "rush: 30 cancels to seats taken", "s", None),
    ("cpu_ms_per_order", "CPU per order (app processes)", "ms", None),
    ("cpu_ms_per_order_with_servers", "CPU per order (+ PostgreSQL, Redis)", "ms", None),
    ("retention_rows_end_vs_filled", "bookkeeping, short window: 2nd/1st", "x", None),
]

RATIO_LABELS = {
    "orders_post_vs_hello": "x hello rate",
    "orders_floor_vs_hello": "x hello rate",
    "orders_post_p50_vs_hello_p50": "x hello p50",
    "orders_post_p99_vs_hello_p99": "x hello p99",
    "orders_post_traced_vs_untraced": "x tracing off",
    "orders_post_traced_p99_vs_untraced": "x tracing off",
    "e2e_vs_celery_noop": "x no-op rate",
    "post_to_mypage_p99_vs_hello_p99": "x hello p99",
    "final_p99_vs_hello_p99": "x hello p99",
    "mypage_get_p99_10k_vs_hello_p99": "x hello p99",
    "mypage_get_1m_vs_10k": "x the 10k p99",
    "rush_sold_out_vs_post": "x POST rate",
}

GOAL_OF_ROW = {
    "orders_post_per_s": "orders_post_vs_hello",
    "e2e_orders_per_s": "e2e_orders_per_s",
    "post_to_mypage_p99_ms": "post_to_mypage_p99_ms",
    "final_p99_ms": "final_p99_ms",
    "mypage_get_p99_ms_1m": "mypage_get_1m_vs_10k",
    "retention_rows_end_vs_filled": "retention_rows_end_vs_filled",
    "rush_seated": "rush_seated",
    "rush_failed_answers": "rush_failed_answers",
    "rush_p99_ms": "rush_p99_ms",
    "rush_sold_out_per_s": "rush_sold_out_vs_post",
    "rush_unfair_seat_pairs": "rush_unfair_seat_pairs",
    "rush_unfair_waitlist_pairs": "rush_unfair_waitlist_pairs",
    "rush_promotion_s": "rush_promotion_s",
}


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return f"{value:,}"


def _line(label: str, value, unit: str, ratio, ratio_label: str, goal: dict) -> str:
    met = goal.get("met")
    return (
        f"{label:38} {_fmt(value):>10} {unit:9} {_fmt(ratio):>8} {ratio_label:14} "
        f"{goal.get('goal', ''):>10} "
        f"{'' if not goal else ('-' if met is None else ('yes' if met else 'NO')):>4}"
    )


def table(document: dict) -> str:
    goals_ = document.get("goals", {})
    lines = [
        f"onlinestudy benchmark, profile {document.get('profile')} "
        f"({document.get('wall_s')} s wall)",
        f"{'figure':38} {'value':>10} {'unit':9} {'ratio':>8} {'to':14} {'goal':>10} {'met':>4}",
        "-" * 100,
    ]
    for key, label, unit, ratio_key in ROWS:
        if key == "mypage_get_p99_ms_1m":
            rows = document.get("details", {}).get("mypage_1m", {}).get("rows")
            if rows:
                label = (
                    f"GET /mypage p99, {rows / 1e6:.2g}M rows"
                    if rows >= 1e6
                    else (f"GET /mypage p99, {rows // 1000}k rows")
                )
        ratio = document.get("ratios", {}).get(ratio_key) if ratio_key else None
        goal = goals_.get(GOAL_OF_ROW.get(key, ""), {})
        lines.append(
            _line(label, document.get(key), unit, ratio, RATIO_LABELS.get(ratio_key, ""), goal)
        )
    with_history = document.get("history")
    if with_history:
        lines.append(
            f"with {with_history['orders']:,} orders of history (ratio: x the empty run's)"
        )
        units = {k: (label, unit) for k, label, unit, _r in ROWS}
        for key, figure in HISTORY_RATIOS.items():
            label, unit = units[figure]
            ratio = document.get("ratios", {}).get(key)
            goal = goals_.get(key, {})
            lines.append(
                _line(f"  {label}", with_history.get(figure), unit, ratio, "x empty", goal)
            )
    rss = document.get("peak_rss_mb", {})
    if rss:
        lines.append("peak RSS per process (MiB): " + ", ".join(f"{k} {v}" for k, v in rss.items()))
    if document.get("error"):
        lines.append(f"ERROR: {document['error']}")
    return "\n".join(lines)
