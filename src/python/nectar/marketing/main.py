"""The marketing binary: `marketing.pex [serve|migrate] ...`; serving is the default."""

import sys

from nectar.marketing.app import SERVICE, create_app
from nectar.schema.migrate import migrate_command
from nectar.shared.cli import run_service_cli


def main(argv: list[str] | None = None) -> int:
    return run_service_cli(SERVICE, create_app, {"migrate": migrate_command}, argv)


if __name__ == "__main__":
    sys.exit(main())
