"""The admin binary: `admin.pex [serve|migrate] ...`; serving is the default."""

import sys

from sqlalchemy import create_engine

from nectar.admin import jobs
from nectar.admin.app import SERVICE, create_app
from nectar.admin.commands import create_staff_command, rotate_credentials_command
from nectar.schema.migrate import migrate_command
from nectar.shared.cli import run_service_cli
from nectar.shared.config import Service, load_settings
from nectar.shared.database import check_connection
from nectar.shared.jobs import job_app, worker_command


def _worker():
    settings = load_settings(SERVICE)
    check_connection(settings.database_url)
    jobs.bind(create_engine(settings.database_url, pool_pre_ping=True), settings.public_urls[Service.CORE])
    return job_app(settings.database_url, jobs.blueprint, listen_url=settings.listen_url), [jobs.QUEUE]


def main(argv: list[str] | None = None) -> int:
    commands = {
        "migrate": migrate_command,
        "create-staff": create_staff_command,
        "rotate-credentials": rotate_credentials_command,
        "worker": worker_command(_worker),
    }
    return run_service_cli(SERVICE, create_app, commands, argv)


if __name__ == "__main__":
    sys.exit(main())
