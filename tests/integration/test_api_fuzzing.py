"""Schemathesis against the live app (in process, real PostgreSQL): whatever it sends, no 5xx,
and every answer matches the OpenAPI document.

Its pytest plugin does not run on pytest 9, so the test drives each operation's hypothesis
strategy itself.
"""

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.integration.test_api_flow import ChainThatCompletes

EXAMPLES_PER_OPERATION = 25


def operations(client):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", client.application)
    return [result.ok() for result in schema.get_all_operations()]


def test_no_input_makes_a_server_error_and_answers_match_the_schema(client_with, container):
    container.score_chain = ChainThatCompletes(container)  # no waiting on Celery here
    client = client_with()
    token = client.environ_base["HTTP_AUTHORIZATION"]
    tested = []
    for operation in operations(client):

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case):
            case.call_and_validate(
                headers={"Authorization": token},
                checks=[not_a_server_error, response_schema_conformance],
            )

        fuzz()
        tested.append(operation.label)
    assert len(tested) >= 18, tested
