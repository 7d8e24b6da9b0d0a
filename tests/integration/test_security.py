"""Who may do what (SPEC 8): every endpoint against every role, tokens, limits."""

from __future__ import annotations

import dataclasses
import re
import time

import jwt
import pytest
import redis
from sqlalchemy import delete, select

from app import create_app
from app.bootstrap import bootstrap
from app.config import Settings
from app.consumer import consume
from app.migrate import upgrade
from app.policies import BY_CONSUMER
from app.security import Tokens
from app.shared.events import EventType
from app.shared.outbox.tables import OutboxEvent
from app.shared.rate_limits import RATE_LIMIT_COUNTERS, DatabaseStorage
from tests.conftest import REDIS_URL
from tests.helpers import course_body, order_body, random_phone, with_token
from tests.integration.test_api_flow import deliver_all


@pytest.fixture
def world(client, client_as, container):
    """Two managers, two students; student one's order is run by manager one."""
    manager_one = client.post("/managers", json={"name": "일매니저", "phone": random_phone()}).json
    course = client.post("/courses", json=course_body()).json
    one, two = random_phone(), random_phone()
    order = client.post("/orders", json=order_body(course["course_no"], phone=one)).json
    deliver_all(container, order["order_no"])  # learning with manager one, evaluation open
    manager_two = client.post("/managers", json={"name": "이매니저", "phone": random_phone()}).json
    learning = client.get("/learnings", query_string={"order_no": order["order_no"]}).json[0]
    evaluation = client.get("/evaluations", query_string={"order_no": order["order_no"]}).json[0]
    assert learning["manager_id"] == manager_one["id"]
    return dataclasses.make_dataclass(
        "World", ["clients", "course", "order", "learning", "evaluation", "phones"]
    )(
        clients={
            "admin": client,
            "manager_one": client_as("manager", manager_id=manager_one["id"]),
            "manager_two": client_as("manager", manager_id=manager_two["id"]),
            "student_one": client_as("student", phone=one),
            "student_two": client_as("student", phone=two),
        },
        course=course,
        order=order,
        learning=learning,
        evaluation=evaluation,
        phones={"one": one, "two": two},
    )


# (who, method, path template, body) -> expected status. 404 = "not yours", 403 = "never you".
MATRIX = [
    ("student_two", "get", "/courses", None, 200),
    ("manager_one", "get", "/courses/{course}", None, 200),
    ("student_one", "post", "/courses", "course", 403),
    ("manager_one", "patch", "/courses/{course}", {"price": 1}, 403),
    ("admin", "patch", "/courses/{course}", {"price": 1}, 200),
    ("student_one", "post", "/orders", "order_one", 201),
    ("student_two", "post", "/orders", "order_one", 403),
    ("manager_one", "post", "/orders", "order_one", 403),
    ("admin", "get", "/orders", None, 200),
    ("manager_one", "get", "/orders", None, 403),
    ("admin", "get", "/orders/{order}", None, 200),
    ("student_one", "get", "/orders/{order}", None, 200),
    ("student_two", "get", "/orders/{order}", None, 404),
    ("manager_one", "get", "/orders/{order}", None, 200),
    ("manager_two", "get", "/orders/{order}", None, 404),
    ("student_two", "post", "/orders/{order}/cancel", None, 404),
    ("manager_one", "post", "/orders/{order}/cancel", None, 403),
    ("student_one", "post", "/managers", {"name": "x", "phone": "010-2222-3333"}, 403),
    ("manager_one", "post", "/managers", {"name": "x", "phone": "010-2222-3333"}, 403),
    ("manager_one", "get", "/managers", None, 200),
    ("student_one", "get", "/managers", None, 403),
    ("student_one", "get", "/learnings", None, 403),
    ("manager_one", "get", "/learnings/{learning}", None, 200),
    ("manager_two", "get", "/learnings/{learning}", None, 404),
    ("student_one", "get", "/learnings/{learning}", None, 403),
    ("manager_two", "post", "/learnings/{learning}/start", "manager_two", 404),
    ("admin", "post", "/learnings/{learning}/start", "manager_two", 409),
    ("student_one", "get", "/evaluations", None, 403),
    ("manager_one", "get", "/evaluations/{evaluation}", None, 200),
    ("manager_two", "get", "/evaluations/{evaluation}", None, 404),
    ("student_one", "get", "/evaluations/{evaluation}", None, 403),
    ("manager_one", "post", "/evaluations/{evaluation}/records", {"score": 50}, 201),
    ("manager_two", "post", "/evaluations/{evaluation}/records", {"score": 50}, 404),
    ("student_one", "post", "/evaluations/{evaluation}/records", {"score": 99}, 403),
    ("manager_two", "post", "/evaluations/{evaluation}/final", {"score": 90}, 404),
    ("student_one", "post", "/evaluations/{evaluation}/final", {"score": 100}, 403),
    ("student_one", "get", "/sms", None, 200),
    ("manager_one", "get", "/sms", None, 403),
    ("student_one", "get", "/mypage/{phone_one}", None, 200),
    ("student_two", "get", "/mypage/{phone_one}", None, 404),
    ("manager_one", "get", "/mypage/{phone_one}", None, 403),
    ("admin", "get", "/mypage/{phone_one}", None, 200),
]


@pytest.mark.parametrize(
    "who, method, path, body, expected", MATRIX, ids=[f"{m[0]}-{m[1]}-{m[2]}" for m in MATRIX]
)
def test_each_role_gets_what_it_may_and_no_more(world, who, method, path, body, expected):
    url = path.format(
        course=world.course["course_no"],
        order=world.order["order_no"],
        learning=world.learning["id"],
        evaluation=world.evaluation["id"],
        phone_one=world.phones["one"],
    )
    if body == "course":
        body = course_body()
    elif body == "order_one":
        other = world.clients["admin"].post("/courses", json=course_body()).json
        body = order_body(other["course_no"], phone=world.phones["one"])
    elif body == "manager_two":
        body = {"manager_id": world.clients["manager_two"].get("/managers").json[-1]["id"]}
    response = getattr(world.clients[who], method)(url, json=body)
    assert response.status_code == expected, response.json


def test_reads_are_confined_to_what_is_yours(world, client_as):
    student_two = world.clients["student_two"]
    # a phone filter cannot widen a student's view
    assert student_two.get("/orders", query_string={"phone": world.phones["one"]}).json == []
    assert student_two.get("/sms", query_string={"phone": world.phones["one"]}).json == []
    mine = world.clients["student_one"].get("/orders").json
    assert [o["order_no"] for o in mine] == [world.order["order_no"]]
    listed = world.clients["manager_two"].get("/learnings").json
    assert world.learning["id"] not in [x["id"] for x in listed]
    evaluations = world.clients["manager_two"].get("/evaluations").json
    assert world.evaluation["id"] not in [e["id"] for e in evaluations]


def test_a_student_cancels_their_own_order(world):
    response = world.clients["student_one"].post(f"/orders/{world.order['order_no']}/cancel")
    assert response.status_code == 200 and response.json["status"] == "CANCELLED"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Bearer not.a.jwt",
        "Basic YWRtaW46YWRtaW4=",
    ],
)
def test_without_a_valid_token_the_answer_is_401(client, header):
    anonymous = client.application.test_client()
    headers = {"Authorization": header} if header else {}
    response = anonymous.get("/orders", headers=headers)
    assert response.status_code == 401
    assert response.json["code"] == 401 and "WWW-Authenticate" in response.headers


def test_expired_foreign_and_incomplete_tokens_are_refused(client, container):
    anonymous = client.application.test_client()
    now = int(time.time())
    secret = container.settings.jwt_secret
    tokens = [
        jwt.encode({"sub": "a", "role": "admin", "exp": now - 3600}, secret, "HS256"),
        jwt.encode({"sub": "a", "role": "admin", "exp": now + 60}, "another-secret", "HS256"),
        jwt.encode({"sub": "a", "role": "student", "exp": now + 60}, secret, "HS256"),
        jwt.encode({"sub": "a", "role": "root", "exp": now + 60}, secret, "HS256"),
        jwt.encode({"sub": "a", "role": "admin"}, secret, "HS256"),
        jwt.encode({"sub": "a", "role": "admin", "exp": now + 60}, secret, "HS512"),
    ]
    for token in tokens:
        response = anonymous.get("/orders", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, token


def test_probes_metrics_and_the_api_description_need_no_token(client):
    anonymous = client.application.test_client()
    for path in ("/health/live", "/health/ready", "/metrics", "/openapi.json"):
        assert anonymous.get(path).status_code == 200, path
    spec = anonymous.get("/openapi.json").json
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert spec["security"] == [{"bearerAuth": []}]
    assert spec["paths"]["/health/live"]["get"]["security"] == []


# The containers the tests below make, each with its own connection pools: closed after each
# test, so that a run does not hold a pool per app until the end (the server has a limit).
_containers: list = []


@pytest.fixture(autouse=True)
def _close_pools():
    yield
    while _containers:
        _containers.pop().db.dispose()


def make_container(settings):
    _containers.append(bootstrap(settings))
    return _containers[-1]


def make_app(it_settings, container_settings=None, **changes):
    settings = dataclasses.replace(it_settings, **changes)
    return create_app(make_container(settings))


def _student(app, tokens, phone):
    return with_token(app.test_client(), tokens.issue("student", phone=phone))


def _courses(app, tokens, *capacities):
    admin = with_token(app.test_client(), tokens.issue("admin"))
    made = [admin.post("/courses", json=course_body(capacity=c)).json for c in capacities]
    return admin, [course["course_no"] for course in made]


def test_too_many_orders_from_one_student_get_429_with_retry_after(committing_settings):
    # Orders are written and stay: the database of the committing tests.
    app = make_app(committing_settings, rate_limit_orders="2/minute")
    tokens = Tokens(committing_settings)
    phone = random_phone()
    student = _student(app, tokens, phone)
    admin, courses = _courses(app, tokens, None, None, None, None)
    answers = [
        student.post("/orders", json=order_body(no, phone=phone)).status_code for no in courses
    ]
    assert answers == [201, 201, 429, 429]
    limited = student.post("/orders", json=order_body(courses[2], phone=phone))
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert limited.json["code"] == 429
    mine = student.get("/orders").json
    assert sorted(o["course_no"] for o in mine) == sorted(courses[:2])  # none past the limit
    admin_answers = [admin.post("/orders", json=order_body(no)).status_code for no in courses]
    assert admin_answers == [201] * 4  # admin tools are not limited


def test_the_order_limit_counts_orders_written_not_sold_out_answers_or_replays(committing_settings):
    """A rush's sold-out answers, retried requests and refused input cost no count: a student
    who was told "sold out" many times can still order when a seat is there."""
    app = make_app(committing_settings, rate_limit_orders="2/minute")
    tokens = Tokens(committing_settings)
    phone = random_phone()
    student = _student(app, tokens, phone)
    admin, (full, open_one, open_two, spare) = _courses(app, tokens, 1, None, None, None)
    assert admin.post("/orders", json=order_body(full)).status_code == 201  # its only seat
    for _ in range(5):
        sold_out = student.post("/orders", json=order_body(full, phone=phone))
        assert sold_out.status_code == 409 and sold_out.json["status"] == "SOLD_OUT"
    for _ in range(3):  # unknown course, bad dates: refused before anything is written
        assert student.post("/orders", json=order_body("NOPE", phone=phone)).status_code == 404
        bad = order_body(open_one, phone=phone, begin_date="2027-01-02", end_date="2027-01-01")
        assert student.post("/orders", json=bad).status_code == 422
    key = {"Idempotency-Key": "one-order"}
    first = student.post("/orders", json=order_body(open_one, phone=phone), headers=key)
    assert first.status_code == 201
    for _ in range(3):
        again = student.post("/orders", json=order_body(open_one, phone=phone), headers=key)
        assert again.status_code == 201 and again.json["order_no"] == first.json["order_no"]
    assert student.post("/orders", json=order_body(open_two, phone=phone)).status_code == 201
    assert student.post("/orders", json=order_body(spare, phone=phone)).status_code == 429


@pytest.mark.speed
def test_a_students_order_counts_against_the_limit_in_one_redis_round_trip(committing_settings):
    # The count is all a request under the limit needs: reading its window back for headers
    # (GET and TTL of the key) was a second round trip on every order.
    app = make_app(
        committing_settings, rate_limit_storage_url=REDIS_URL, rate_limit_orders="2/minute"
    )
    tokens = Tokens(committing_settings)
    phone = random_phone()
    student = _student(app, tokens, phone)
    _admin, courses = _courses(app, tokens, None, None, None)
    store = redis.Redis.from_url(REDIS_URL)

    def window_reads() -> int:
        return store.info("commandstats").get("cmdstat_ttl", {}).get("calls", 0)

    before = window_reads()
    answer = student.post("/orders", json=order_body(courses[0], phone=phone))
    assert answer.status_code == 201
    assert "Retry-After" not in answer.headers  # only a refusal says when to come back
    assert window_reads() == before
    student.post("/orders", json=order_body(courses[1], phone=phone))
    limited = student.post("/orders", json=order_body(courses[2], phone=phone))
    assert limited.status_code == 429
    assert 0 < int(limited.headers["Retry-After"]) <= 60


def test_requests_without_a_token_are_limited_per_address(it_settings):
    app = make_app(it_settings, rate_limit_anonymous="3/minute")
    anonymous = app.test_client()
    answers = [anonymous.get("/courses").status_code for _ in range(4)]
    assert answers == [401, 401, 401, 429]
    assert anonymous.get("/health/live").status_code == 200  # probes are never limited


def test_an_oversized_body_is_413(client):
    response = client.post("/courses", json=course_body(description="가" * 1_000_000))
    assert response.status_code == 413 and response.json["code"] == 413


def test_cors_is_closed_by_default_and_opens_to_the_configured_origins(client, it_settings):
    origin = {"Origin": "https://evil.example"}
    assert "Access-Control-Allow-Origin" not in client.get("/courses", headers=origin).headers
    app = make_app(it_settings, cors_origins=("https://app.onlinestudy.example",))
    opened = app.test_client().options(
        "/courses",
        headers={
            "Origin": "https://app.onlinestudy.example",
            "Access-Control-Request-Method": "GET",
        },
    )
    assert opened.headers["Access-Control-Allow-Origin"] == "https://app.onlinestudy.example"
    refused = app.test_client().options(
        "/courses",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "Access-Control-Allow-Origin" not in refused.headers


def test_security_headers_are_set(client):
    headers = client.get("/courses").headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["Cache-Control"] == "no-store"


def test_the_docs_page_allows_only_the_apis_own_files(client):
    page = client.get("/docs")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "http" not in csp
    sources = re.findall(rb'(?:src|href)="([^"]+)"', page.data)
    assert sources and all(source.startswith(b"/docs/") for source in sources), sources
    for source in sources:
        assert client.get(source.decode()).status_code == 200, source


def test_the_docs_page_serves_no_other_file(client):
    page = client.get("/docs").data.decode()
    (bundle,) = re.findall(r'src="(/docs/[^"]+/)swagger-ui-bundle.js"', page)
    for name in ("index.html", "swagger-ui.js.map", "..%2F__init__.py"):
        missing = client.get(bundle + name)
        assert missing.status_code == 404, name
        assert missing.json["code"] == 404
    assert client.get("/docs/swagger-ui-0.0.1/swagger-ui.css").status_code == 404


def test_metrics_can_be_closed_with_their_own_token(it_settings):
    app = make_app(it_settings, metrics_token="scrape-me")
    scraper = app.test_client()
    assert scraper.get("/metrics").status_code == 401
    assert scraper.get("/metrics", headers={"Authorization": "Bearer scrape-me"}).status_code == 200


@pytest.mark.parametrize("manager_id", [0, True, -1, "1"])
def test_a_manager_token_naming_no_manager_is_refused_not_widened(world, container, manager_id):
    # Signed with the real secret: only the claims are wrong.
    claims = {"sub": "m", "role": "manager", "manager_id": manager_id}
    token = jwt.encode({**claims, "exp": int(time.time()) + 60}, container.settings.jwt_secret)
    forged = world.clients["admin"].application.test_client()
    for path in ("/learnings", f"/learnings?manager_id={world.learning['manager_id']}"):
        answer = forged.get(path, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401, answer.json


def deliver_cancel_first(container, order_no):
    """The learning context hears of the cancel before the order: it leaves a tombstone."""
    with container.main_session() as session:
        [cancelled] = session.execute(
            select(OutboxEvent).where(
                OutboxEvent.order_no == order_no,
                OutboxEvent.event_type == EventType.COURSE_ORDER_CANCELLED,
            )
        ).scalars()
        envelope = cancelled.to_event().envelope()
    consume(container, BY_CONSUMER["learning.cancel_learning"], [envelope])


def test_no_manager_reads_a_learning_that_ended_before_a_manager_took_it(
    client, client_as, container
):
    course = client.post("/courses", json=course_body()).json
    # Cancelled while WAITING (no manager yet), and a tombstone (cancelled before it opened).
    waited = client.post("/orders", json=order_body(course["course_no"])).json
    deliver_all(container, waited["order_no"])
    client.post(f"/orders/{waited['order_no']}/cancel")
    deliver_all(container, waited["order_no"])
    early = client.post("/orders", json=order_body(course["course_no"])).json
    client.post(f"/orders/{early['order_no']}/cancel")
    deliver_cancel_first(container, early["order_no"])
    manager = client.post("/managers", json={"name": "남매니저", "phone": random_phone()}).json
    as_manager = client_as("manager", manager_id=manager["id"])
    for order in (waited, early):
        [learning] = client.get("/learnings", query_string={"order_no": order["order_no"]}).json
        assert (learning["status"], learning["manager_id"]) == ("CANCELLED", None)
        assert as_manager.get(f"/learnings/{learning['id']}").status_code == 404
        listed = as_manager.get("/learnings", query_string={"order_no": order["order_no"]}).json
        assert listed == []
        assert as_manager.get(f"/orders/{order['order_no']}").status_code == 404


def test_a_manager_lists_the_waiting_learnings_and_takes_one_on_themselves(
    client, client_as, container
):
    course = client.post("/courses", json=course_body()).json
    phone = random_phone()
    order = client.post("/orders", json=order_body(course["course_no"], phone=phone)).json
    deliver_all(container, order["order_no"])  # no manager yet: it waits
    # Two managers join; the learning context has not yet started the waiting ones for them.
    one = client.post("/managers", json={"name": "하나매니저", "phone": random_phone()}).json
    two = client.post("/managers", json={"name": "둘매니저", "phone": random_phone()}).json
    manager_one = client_as("manager", manager_id=one["id"])
    manager_two = client_as("manager", manager_id=two["id"])

    [waiting] = manager_one.get("/learnings", query_string={"status": "WAITING"}).json
    assert (waiting["order_no"], waiting["status"]) == (order["order_no"], "WAITING")
    assert waiting["phone"] == f"{phone[:4]}****{phone[-5:]}"  # whose it is: once taken
    assert manager_one.get(f"/learnings/{waiting['id']}").json["phone"] == waiting["phone"]
    assert manager_one.get(f"/orders/{order['order_no']}").status_code == 404
    start = f"/learnings/{waiting['id']}/start"
    assert manager_one.post(start, json={"manager_id": two["id"]}).status_code == 403

    taken = manager_one.post(start, json={"manager_id": one["id"]})
    assert taken.status_code == 200, taken.json
    assert (taken.json["status"], taken.json["phone"]) == ("STARTED", phone)
    assert manager_two.post(start, json={"manager_id": two["id"]}).status_code == 404
    assert manager_two.get(f"/learnings/{waiting['id']}").status_code == 404
    assert manager_two.get("/learnings", query_string={"status": "WAITING"}).json == []
    [mine] = manager_one.get("/learnings").json
    assert (mine["id"], mine["phone"]) == (waiting["id"], phone)

    deliver_all(container, order["order_no"])  # the evaluation opens, with manager one
    [evaluation] = manager_one.get(
        "/evaluations", query_string={"order_no": order["order_no"]}
    ).json
    assert evaluation["manager_id"] == one["id"]
    assert manager_one.get(f"/orders/{order['order_no']}").status_code == 200
    assert manager_two.get(f"/evaluations/{evaluation['id']}").status_code == 404


def test_an_idempotency_key_is_its_callers_own(client, client_as):
    course = client.post("/courses", json=course_body()).json
    one, two = random_phone(), random_phone()
    student_one = client_as("student", phone=one)
    student_two = client_as("student", phone=two)
    key = {"Idempotency-Key": "same-key-for-both"}
    first = student_one.post(
        "/orders", json=order_body(course["course_no"], phone=one), headers=key
    )
    theirs = student_two.post(
        "/orders", json=order_body(course["course_no"], phone=two), headers=key
    )
    assert (first.status_code, theirs.status_code) == (201, 201), theirs.json
    assert theirs.json["order_no"] != first.json["order_no"] and theirs.json["phone"] == two
    again = student_two.post(
        "/orders", json=order_body(course["course_no"], phone=two), headers=key
    )
    assert again.json["order_no"] == theirs.json["order_no"]
    other_body = order_body(course["course_no"], phone=one, end_date="2027-03-31")
    assert student_one.post("/orders", json=other_body, headers=key).status_code == 422


def test_a_course_off_the_catalog_is_seen_only_by_admins_and_the_students_who_ordered_it(
    client, client_as
):
    course = client.post("/courses", json=course_body()).json
    buyer, other = random_phone(), random_phone()
    client.post("/orders", json=order_body(course["course_no"], phone=buyer))
    manager = client.post("/managers", json={"name": "삼매니저", "phone": random_phone()}).json
    readers = {
        "admin": client,
        "buyer": client_as("student", phone=buyer),
        "other": client_as("student", phone=other),
        "manager": client_as("manager", manager_id=manager["id"]),
    }
    path = f"/courses/{course['course_no']}"
    assert {who: c.get(path).status_code for who, c in readers.items()} == dict.fromkeys(
        readers, 200
    )
    client.patch(path, json={"active": False})
    seen = {who: c.get(path).status_code for who, c in readers.items()}
    assert seen == {"admin": 200, "buyer": 200, "other": 404, "manager": 404}


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
def test_the_bearer_scheme_is_accepted_in_any_case(client, container, scheme):
    anonymous = client.application.test_client()
    token = container.tokens.issue("admin")
    response = anonymous.get("/orders", headers={"Authorization": f"{scheme} {token}"})
    assert response.status_code == 200


def test_the_metrics_token_is_compared_in_constant_time(it_settings, monkeypatch):
    import hmac

    from app.shared import credentials

    compared, real = [], hmac.compare_digest

    def compare_digest(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(credentials.hmac, "compare_digest", compare_digest)
    scraper = make_app(it_settings, metrics_token="scrape-me").test_client()
    assert scraper.get("/metrics", headers={"Authorization": "bearer scrape-me"}).status_code == 200
    assert scraper.get("/metrics", headers={"Authorization": "Bearer scrape-mE"}).status_code == 401
    assert compared == [(b"scrape-me", b"scrape-me"), (b"scrape-mE", b"scrape-me")]


def test_when_the_identity_providers_keys_cannot_be_fetched_the_answer_is_503(it_settings):
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.e2e.conftest import free_port

    issuer = "https://idp.example.com"
    app = make_app(
        it_settings,
        jwt_algorithm="RS256",
        jwt_issuer=issuer,
        jwt_jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json",  # nobody listens
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    token = jwt.encode(
        {"sub": "u", "role": "admin", "iss": issuer, "exp": now + 60},
        key,
        algorithm="RS256",
        headers={"kid": "k1"},
    )
    answer = app.test_client().get("/orders", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0
    assert "identity provider" in answer.json["message"]


# --- limits that every API process shares ---------------------------------------------------


@pytest.fixture(params=["postgresql", "sqlite"])
def database_settings(request, it_settings, tmp_path):
    """Settings whose limits count in the main database: PostgreSQL, or the embedded SQLite."""
    if request.param == "postgresql":
        settings = dataclasses.replace(it_settings, rate_limit_storage_url="database")
    else:
        settings = Settings.from_env({"ONLINESTUDY_VAR_DIR": str(tmp_path)})
        upgrade(settings)
    with make_container(settings).main_session() as session:
        session.execute(delete(RATE_LIMIT_COUNTERS))
        session.commit()
    return settings


def test_without_redis_two_api_processes_count_in_the_database_together(database_settings):
    assert database_settings.rate_limit_storage_url == "database"
    first, second = (
        make_app(database_settings, rate_limit_anonymous="5/minute").test_client() for _ in range(2)
    )
    answers = [(first if i % 2 else second).get("/courses").status_code for i in range(12)]
    assert answers == [401] * 5 + [429] * 7


def test_a_database_counter_starts_again_when_its_window_is_over(database_settings):
    storage = DatabaseStorage(session=make_container(database_settings).main_session)
    assert [storage.incr("k", expiry=1) for _ in range(3)] == [1, 2, 3]
    assert storage.get("k") == 3 and time.time() < storage.get_expiry("k") <= time.time() + 1
    time.sleep(1.1)
    assert storage.get("k") == 0
    assert storage.incr("k", expiry=1) == 1
    storage.clear("k")
    assert storage.get("k") == 0 and storage.check()


def test_the_token_less_limit_counts_every_route_together(it_settings):
    anonymous = make_app(it_settings, rate_limit_anonymous="4/minute").test_client()
    answers = [anonymous.get(path).status_code for path in ("/courses", "/orders", "/sms") * 2]
    assert answers == [401] * 4 + [429] * 2
