"""Hostile input only ever gets a 4xx (or the right answer), never a 500 or a changed row."""

import json
import re

import pytest

from tests.helpers import course_body, order_body, random_category, random_phone
from tests.integration.test_api_flow import deliver_all

STRANGE_TEXTS = [
    "' OR 1=1 --",
    "'; DROP TABLE orders_orders; --",
    "%",
    "_",
    "\\",
    "%%_\\%",
    "\u202eevil\u202c",
    "zero\u200bwidth",
    "🎓📚",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "한국어 강좌",
    "Ω≈ç√∫",
    "ﷺ",
    "a" * 200,
    "\ud7ff",
    "<script>alert(1)</script>",
    "${jndi:ldap://x}",
]


@pytest.mark.parametrize("q", STRANGE_TEXTS)
def test_search_with_strange_text_finds_only_what_contains_it(client, q):
    category = random_category()
    holder = client.post("/courses", json=course_body(description=q, category=category))
    client.post("/courses", json=course_body(category=category))  # contains none of them
    response = client.get("/courses", query_string={"q": q, "category": category})
    assert response.status_code == 200
    assert [c["course_no"] for c in response.json] == [holder.json["course_no"]]


@pytest.mark.parametrize("text", STRANGE_TEXTS[:14])
def test_strange_text_in_fields_is_stored_and_returned_as_given(client, text):
    created = client.post("/courses", json=course_body(title=text[:200], description=text))
    assert created.status_code == 201
    again = client.get(f"/courses/{created.json['course_no']}").json
    assert (again["title"], again["description"]) == (text[:200], text)
    found = client.get("/courses", query_string={"q": text[:50]}).json
    assert created.json["course_no"] in [c["course_no"] for c in found]


@pytest.mark.parametrize(
    "field, value",
    [
        ("title", "nul\u0000byte"),
        ("description", "\u0000"),
        ("course_no", "C\u0000"),
        ("title", "x" * 201),
        ("course_no", "x" * 33),
        ("description", "x" * 5001),
        ("category", ["list"]),
        ("price", 10**20),
        ("price", 1.5),
        ("price", True),
        ("active", "maybe"),
    ],
)
def test_bad_fields_are_refused_with_422(client, field, value):
    response = client.post("/courses", json=course_body(**{field: value}))
    assert response.status_code == 422, response.json


@pytest.mark.parametrize("q", ["nul\u0000byte", "x" * 201])
def test_bad_queries_are_refused_with_422(client, q):
    assert client.get("/courses", query_string={"q": q}).status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        [],
        "just a string",
        42,
        None,
        {"course_no": {"$ne": 1}},
        {"phone": ["010-1234-5678"]},
    ],
)
def test_bodies_of_the_wrong_shape_are_refused(client, body):
    response = client.post("/orders", json=body)
    assert 400 <= response.status_code < 500, response.json


def test_an_order_with_an_injected_course_number_finds_nothing(client):
    response = client.post("/orders", json=order_body("X' OR '1'='1"))
    assert response.status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/orders/%00",
        "/orders/' OR 1=1",
        "/learnings/-1",
        "/evaluations/99999999999999999999",
        "/mypage/%00",
        "/courses/" + "x" * 5000,
    ],
)
def test_strange_paths_are_4xx(client, path):
    assert 400 <= client.get(path).status_code < 500


def routes(app):
    """Every route of the API with each of its methods, path parameters filled in."""
    filled = {"course_no": "C1", "order_no": "O1", "phone": "010-2000-1000"}
    for rule in app.url_map.iter_rules():
        path = rule.rule
        for name in rule.arguments:
            path = path.replace(f"<{name}>", filled.get(name, "1"))
            path = re.sub(rf"<[^>]*:{name}>", "1", path)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method, path


DEEP = "[" * 3000 + "]" * 3000


def test_a_deeply_nested_body_is_never_a_server_error_on_any_route(client):
    anonymous = client.application.test_client()
    for method, path in routes(client.application):
        answer = client.open(path, method=method, data=DEEP, content_type="application/json")
        assert answer.status_code < 500, (method, path, answer.json)
        assert answer.status_code in (200, 400, 404, 405, 409) or answer.json, (method, path)
        unauthenticated = anonymous.open(
            path, method=method, data=DEEP, content_type="application/json"
        )
        assert unauthenticated.status_code < 500, (method, path)


@pytest.mark.parametrize("path", ["/courses", "/orders", "/managers"])
def test_a_deeply_nested_body_is_400_after_the_token_is_checked(client, path):
    answer = client.post(path, data=DEEP, content_type="application/json")
    assert answer.status_code == 400
    assert "nested" in answer.json["message"]
    anonymous = client.application.test_client()
    assert anonymous.post(path, data=DEEP, content_type="application/json").status_code == 401
    assert (
        anonymous.get("/health/live", data=DEEP, content_type="application/json").status_code == 200
    )


def raw(body: str):
    return {"data": body, "content_type": "application/json"}


@pytest.mark.parametrize("field", ["course_no", "title", "description", "category"])
def test_a_lone_surrogate_in_a_course_field_is_422_and_stores_nothing(client, field):
    body = course_body()
    escaped = json.dumps(body).replace(json.dumps(body[field]), '"x\\ud800"')
    assert client.post("/courses", **raw(escaped)).status_code == 422
    assert client.get(f"/courses/{body['course_no']}").status_code == 404
    if field != "course_no":
        created = client.post("/courses", json=course_body()).json
        patch = client.patch(f"/courses/{created['course_no']}", **raw(f'{{"{field}": "\\udfff"}}'))
        assert patch.status_code == 422
        assert client.get(f"/courses/{created['course_no']}").json == created


def test_a_lone_surrogate_anywhere_else_is_422(client, container):
    course = client.post("/courses", json=course_body()).json
    order = json.dumps(order_body("\ud800"))  # escaped: "\\ud800"
    assert client.post("/orders", **raw(order)).status_code == 422
    manager = json.dumps({"name": "\ud83c", "phone": random_phone()})
    assert client.post("/managers", **raw(manager)).status_code == 422
    assert client.get("/managers").json == []
    client.post("/managers", json={"name": "김매니저", "phone": random_phone()})
    order = client.post("/orders", json=order_body(course["course_no"])).json
    deliver_all(container, order["order_no"])
    [evaluation] = client.get("/evaluations", query_string={"order_no": order["order_no"]}).json
    records = f"/evaluations/{evaluation['id']}/records"
    assert (
        client.post(records, **raw('{"score": 50, "comment": "좋아요\\ud800"}')).status_code == 422
    )
    assert client.get(f"/evaluations/{evaluation['id']}").json["records"] == []


@pytest.mark.parametrize(
    "path, query",
    [
        ("/courses", "q=%ED%A0%80"),
        ("/courses", "category=%ED%B0%80"),
        ("/orders", "status=%ED%A0%80"),
        ("/learnings", "order_no=%ED%A0%80"),
        ("/evaluations", "order_no=%ED%A0%80"),
        ("/sms", "order_no=%ED%A0%80"),
    ],
)
def test_a_surrogate_in_a_query_string_is_never_a_server_error(client, path, query):
    # Percent-encoded, a surrogate is three bytes that are not UTF-8: what a client can send.
    assert client.get(f"{path}?{query}").status_code < 500


@pytest.mark.parametrize(
    "path, body",
    [
        ("/courses", '{"course_no": "C9", "title": "t", "price": %s}'),
        ("/learnings/1/start", '{"manager_id": %s}'),
        ("/evaluations/1/records", '{"score": %s}'),
        ("/evaluations/1/final", '{"score": %s}'),
    ],
)
@pytest.mark.parametrize("number", ["9" * 5000, "-" + "9" * 5000, str(2**64), "1e999"])
def test_a_huge_number_in_any_integer_field_is_422(client, path, body, number):
    answer = client.post(path, **raw(body % number))
    assert answer.status_code == 422, answer.json
    assert "out of range" in answer.json["message"]


@pytest.mark.parametrize(
    "query", ["manager_id=" + "9" * 5000, "page=" + "9" * 5000, "page_size=" + "9" * 30]
)
def test_a_huge_number_in_a_query_is_422(client, query):
    assert client.get(f"/learnings?{query}").status_code == 422
