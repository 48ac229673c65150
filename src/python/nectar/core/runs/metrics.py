"""Workflow runs counted for Prometheus (nectar.shared.metrics): by trigger and the status recorded."""

from prometheus_client import Counter

WORKFLOW_RUNS = Counter(
    "nectar_workflow_runs",
    "Workflow runs recorded, by trigger and status (an asynchronous run counts each wait and its end).",
    ["trigger", "status"],
)


def count_run(trigger: str, status: str) -> None:
    WORKFLOW_RUNS.labels(trigger, status).inc()
