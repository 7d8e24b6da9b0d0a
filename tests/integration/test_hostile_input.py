"""Hostile input only ever gets a 4xx (or the right answer), never a 500 or a changed row."""

import pytest

from tests.helpers import course_body, order_body, random_category

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
