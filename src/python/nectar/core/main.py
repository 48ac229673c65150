"""The core binary: `core.pex [serve|migrate] ...`; serving is the default."""

import sys

from nectar.core.alerts import jobs as alert_jobs
from nectar.core.app import SERVICE, create_app
from nectar.core.runs import jobs
from nectar.schema.migrate import migrate_command
from nectar.shared.cli import run_service_cli
from nectar.shared.config import load_settings
from nectar.shared.database import check_connection
from nectar.shared.jobs import job_app, worker_command

# Everything core's worker runs: workflow runs and schedules, alerts.
WORKER_BLUEPRINTS = (jobs.blueprint, alert_jobs.blueprint)


def _worker():
    """The Flask app (for settings and the database session) and procrastinate over core's queue,
    WORKER_CONCURRENCY runs at once (an organization's share of them: jobs.py)."""
    settings = load_settings(SERVICE)
    check_connection(settings.database_url)
    jobs.bind(create_app(settings))
    app = job_app(settings.database_url, *WORKER_BLUEPRINTS, listen_url=settings.listen_url)
    app.worker_defaults["concurrency"] = settings.worker_concurrency
    return app, [jobs.QUEUE]


def main(argv: list[str] | None = None) -> int:
    commands = {"migrate": migrate_command, "worker": worker_command(_worker)}
    return run_service_cli(SERVICE, create_app, commands, argv)


if __name__ == "__main__":
    sys.exit(main())
