"""Schemathesis against a live core (a real HTTP server on the tests' database) with an admin API key:
every /api/v1 operation with generated requests, then stateful sequences following the document's
links. No server error, and no answer the document does not allow. Bounded: a few examples each."""

from __future__ import annotations

import hypothesis  # pants: no-infer-dep (schemathesis's own dependency, in the resolve with it)
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase  # pants: no-infer-dep
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.core.test_api_key_scopes import _key
from tests.serving import served

EXAMPLES_PER_OPERATION = 12
STATEFUL_RUNS = 12
# A request the document allows may still be refused for what a schema cannot say (a workflow
# document's steps, a connector's settings, an address that is taken): a 422 there is right.
EXCLUDED = [positive_data_acceptance]
SETTINGS = dict(
    deadline=None,
    database=None,
    derandomize=True,  # the same cases every run: a failure here is reproducible
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],
)


@pytest.fixture(scope="module")
def live_core(core_app):
    with served(core_app) as url:
        yield url


@pytest.fixture()
def api(live_core, browser):
    browser.sign_up()
    browser.create_org()
    schema = schemathesis.openapi.from_url(f"{live_core}/api/v1/openapi.json")
    return schema, f"{live_core}/api/v1", {"Authorization": f"Bearer {_key(browser, 'admin')}"}


def test_every_operation_answers_as_documented(api):
    schema, base_url, headers = api
    failures = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 40
    for operation in operations:

        @hypothesis.settings(max_examples=EXAMPLES_PER_OPERATION, **SETTINGS)
        @hypothesis.given(case=operation.as_strategy())
        def check(case):
            case.call_and_validate(base_url=base_url, headers=headers, timeout=30, excluded_checks=EXCLUDED)

        try:
            check()
        except Exception as failure:  # noqa: BLE001 - every operation's failure is reported at once
            failures[operation.label] = str(failure)[:2000]
    assert not failures, "\n\n".join(f"{label}:\n{failure}" for label, failure in failures.items())


def test_sequences_following_the_links_answer_as_documented(api):
    schema, base_url, headers = api

    class Workflow(schema.as_state_machine()):
        def get_call_kwargs(self, case):
            return {"base_url": base_url, "headers": headers, "timeout": 30}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(
                response,
                additional_checks=additional_checks,
                excluded_checks=EXCLUDED,
                transport_kwargs=kwargs,
            )

    Workflow.run(settings=hypothesis.settings(max_examples=STATEFUL_RUNS, stateful_step_count=6, **SETTINGS))
