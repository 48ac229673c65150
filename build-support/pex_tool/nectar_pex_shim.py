"""Entry point of the pex tool that Pants runs (built by ./pants from PyPI's pex).

Pants 2.17 builds PEXes from a lockfile with `pex --lock ...` and no resolver flag, so pex drives pip
with its legacy resolver, which dies on platform wheels (`assert req.link is not None`). Lockfile
generation already passes `--resolver-version pip-2020-resolver`; this adds it to `--lock` calls too.
"""
import sys


def main() -> None:
    args = sys.argv[1:]
    if "--lock" in args and not any(a.startswith("--resolver-version") for a in args):
        sys.argv[1:1] = ["--resolver-version", "pip-2020-resolver"]
    from pex.bin.pex import main as pex_main

    pex_main()
