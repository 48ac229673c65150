"""The marketing binary: `marketing.pex [serve|migrate|worker] ...`; serving is the default."""

import sys

from nectar.marketing import jobs
from nectar.marketing.app import SERVICE, create_app
from nectar.marketing.billing import jobs as billing_jobs
from nectar.marketing.billing.config import load_billing_config
from nectar.marketing.links import Links
from nectar.schema.migrate import migrate_command
from nectar.shared.cli import run_service_cli
from nectar.shared.config import load_settings, load_smtp_settings
from nectar.shared.database import check_connection
from nectar.shared.jobs import job_app, worker_command


def _worker():
    """Procrastinate over marketing's queue: the outbox sender, campaigns, and billing's jobs."""
    settings = load_settings(SERVICE)
    smtp = load_smtp_settings()
    billing = load_billing_config(settings)
    check_connection(settings.database_url)
    engine = jobs.worker_engine(settings.database_url)
    jobs.bind(engine, Links(settings.secret_key, settings.public_url), smtp)
    billing_jobs.bind(engine, settings, billing)
    return job_app(settings.database_url, jobs.blueprint, listen_url=settings.listen_url), [jobs.QUEUE]


def main(argv: list[str] | None = None) -> int:
    commands = {"migrate": migrate_command, "worker": worker_command(_worker)}
    return run_service_cli(SERVICE, create_app, commands, argv)


if __name__ == "__main__":
    sys.exit(main())
