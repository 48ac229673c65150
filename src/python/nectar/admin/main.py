"""The admin binary: `admin.pex [serve|migrate] ...`; serving is the default."""

import sys

from nectar.admin.app import SERVICE, create_app
from nectar.admin.commands import rotate_credentials_command
from nectar.schema.migrate import migrate_command
from nectar.shared.cli import run_service_cli


def main(argv: list[str] | None = None) -> int:
    commands = {"migrate": migrate_command, "rotate-credentials": rotate_credentials_command}
    return run_service_cli(SERVICE, create_app, commands, argv)


if __name__ == "__main__":
    sys.exit(main())
