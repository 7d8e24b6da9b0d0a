"""Schemathesis against the live app (in process, real PostgreSQL): whatever it sends, no 5xx,
and every answer matches the OpenAPI document.

Its pytest plugin does not run on pytest 9, so the test drives each operation's hypothesis
strategy itself. Schemathesis only sends what the document allows a client to type; a hostile
client sends more, so each case may also be turned into one of the classes of
tests/strategies.py: a body field, the whole body (on every route, those without a body too)
or a query parameter replaced by a value of the class.
"""

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests import strategies as hostile
from tests.helpers import course_body, order_body, random_phone
from tests.integration.test_api_flow import ChainThatCompletes, deliver_all

EXAMPLES_PER_OPERATION = 25
HOSTILE_EXAMPLES_PER_OPERATION = 15


def operations(client):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", client.application)
    return [result.ok() for result in schema.get_all_operations()]


@pytest.fixture
def client(client_with, container):
    container.score_chain = ChainThatCompletes(container)  # no waiting on Celery here
    return client_with()


@pytest.fixture
def world(client, container):
    """Real path parameters (an IN_PROGRESS evaluation, its learning and order), so that the
    fuzzing reaches the commits and queries behind the lookups, not only 404s."""
    client.post("/managers", json={"name": "퍼즈매니저", "phone": random_phone()})
    course = client.post("/courses", json=course_body()).json
    phone = random_phone()
    order = client.post("/orders", json=order_body(course["course_no"], phone=phone)).json
    deliver_all(container, order["order_no"])
    [learning] = client.get("/learnings", query_string={"order_no": order["order_no"]}).json
    [evaluation] = client.get("/evaluations", query_string={"order_no": order["order_no"]}).json
    return {
        "course_no": course["course_no"],
        "order_no": order["order_no"],
        "phone": phone,
        "learning_id": learning["id"],
        "evaluation_id": evaluation["id"],
    }


def strategy(operation, world):
    wanted = {p.name for p in operation.path_parameters}
    return operation.as_strategy(path_parameters={k: v for k, v in world.items() if k in wanted})


def fuzz_settings(examples: int):
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def test_no_input_makes_a_server_error_and_answers_match_the_schema(client, world):
    token = client.environ_base["HTTP_AUTHORIZATION"]
    tested = []
    for operation in operations(client):

        @given(case=strategy(operation, world))
        @fuzz_settings(EXAMPLES_PER_OPERATION)
        def fuzz(case):
            case.call_and_validate(
                headers={"Authorization": token},
                checks=[not_a_server_error, response_schema_conformance],
            )

        fuzz()
        tested.append(operation.label)
    assert len(tested) >= 18, tested


def make_hostile(case, hostile_class: str, data: st.DataObject) -> tuple[str, dict[str, Any]]:
    """What replaces part of the case (said in words) and the `call` arguments that send it."""
    value = hostile.VALUES[hostile_class]
    spots = ["whole body"]
    if isinstance(case.body, dict):
        spots.append("body field")
    if case.operation.query:
        spots.append("query parameter")
    spot = data.draw(st.sampled_from(spots))
    if spot == "query parameter":
        name = data.draw(st.sampled_from([p.name for p in case.operation.query]))
        text = data.draw(hostile.QUERY_TEXTS[hostile_class])
        # A lone surrogate travels as the three bytes UTF-8 would give it, percent-encoded.
        return f"query {name}", {"params": {name: text.encode("utf-8", "surrogatepass")}}
    if spot == "body field":
        body: dict[str, Any] = dict(case.body)
        name = data.draw(st.sampled_from(sorted({*body, *_body_fields(case.operation)})))
        body[name] = data.draw(value | hostile.hostile_json(hostile_class))
        spot = f"body {name}"
    else:
        body = data.draw(value | hostile.hostile_json(hostile_class))
    return spot, {
        "data": hostile.json_text(body).encode(),
        "headers": {"Content-Type": "application/json"},
    }


def _body_fields(operation) -> list[str]:
    body = next(iter(operation.body), None)
    schema = body.definition.get("schema", {}) if body is not None else {}
    if "$ref" in schema:
        schema = operation.schema.resolver.lookup(schema["$ref"]).contents
    return list(schema.get("properties", {}))


@pytest.mark.parametrize("hostile_class", hostile.CLASSES)
def test_no_hostile_input_makes_a_server_error(client, world, hostile_class):
    token = client.environ_base["HTTP_AUTHORIZATION"]
    for operation in operations(client):

        @given(case=strategy(operation, world), data=st.data())
        @fuzz_settings(HOSTILE_EXAMPLES_PER_OPERATION)
        def fuzz(case, data):
            replaced, sent = make_hostile(case, hostile_class, data)
            headers = {"Authorization": token, **sent.pop("headers", {})}
            response = case.call(headers=headers, **sent)
            assert response.status_code < 500, (replaced, response.status_code, response.text)
            if response.status_code >= 400:
                assert response.json()["code"] == response.status_code, response.text

        fuzz()
