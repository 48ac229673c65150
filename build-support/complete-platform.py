"""Writes the complete platform the production PEX files are built for: CPython 3.11 on Linux
x86_64 with glibc 2.28 or newer (RHEL 8, Debian 10, Ubuntu 20.04 and later).

    /path/to/pex3 interpreter inspect --python python3.11 --markers --tags > /tmp/here.json
    python3 build-support/complete-platform.py /tmp/here.json > 3rdparty/platforms/linux_x86_64_cp311_glibc2_28.json

The inspected interpreter must run on glibc 2.28 or newer; its tags for newer glibc versions are
dropped, so no wheel that needs more than the floor can be chosen.
"""

import json
import re
import sys

GLIBC_FLOOR = (2, 28)


def within_floor(tag: str) -> bool:
    match = re.search(r"manylinux_(\d+)_(\d+)_", tag)
    return match is None or (int(match.group(1)), int(match.group(2))) <= GLIBC_FLOOR


def main() -> None:
    inspected = json.load(open(sys.argv[1]))
    markers = dict(inspected["marker_environment"])
    markers.update(platform_release="", platform_version="")  # the build machine's kernel says nothing
    platform = {
        "marker_environment": markers,
        "compatible_tags": [tag for tag in inspected["compatible_tags"] if within_floor(tag)],
    }
    json.dump(platform, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
