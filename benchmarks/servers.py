"""The benchmarks' PostgreSQL (var/bench-postgres), with production durability unless asked
otherwise: fsync, synchronous commits and full-page writes off flatter anything that writes."""

from __future__ import annotations

import os
from pathlib import Path

from nectar.shared.embedded_postgres import EmbeddedServer, ensure_embedded_server

BENCH_SERVER = Path("var/bench-postgres")


def bench_server(*, durable: bool = True) -> EmbeddedServer:
    """The benchmarks' server, running with the durability asked for: one left running by an
    earlier benchmark with the other setting is restarted."""
    server = ensure_embedded_server(BENCH_SERVER.resolve(), durable=durable)
    with server.connect_as_superuser() as conn:
        fsync = conn.execute("SHOW fsync").fetchone()[0] == "on"
    if fsync != durable:
        server.stop()
        server.start(durable=durable)
    return server


def durability(server: EmbeddedServer) -> str:
    """How the server writes, for a benchmark's report."""
    with server.connect_as_superuser() as conn:
        settings = [
            conn.execute(f"SHOW {name}").fetchone()[0]
            for name in ("fsync", "synchronous_commit", "full_page_writes")
        ]
    return (
        "production durability"
        if settings == ["on", "on", "on"]
        else "fsync, synchronous_commit, full_page_writes: " + ", ".join(settings)
    )


def cpu_seconds(pid: int, *, with_reaped: bool = False) -> float:
    """CPU time (user and system) used so far by process `pid` and its live descendants, and with
    `with_reaped` by the children it has waited for: PostgreSQL's postmaster reaps the backends of
    connections that closed, whose work counts too."""
    total = 0
    for process in [pid, *_descendants(pid)]:
        try:
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # ended meanwhile
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
        if with_reaped and process == pid:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime
    return total / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds(server: EmbeddedServer) -> float:
    """CPU time used so far by the server: its postmaster, backends and background processes."""
    postmaster = int((server.root / "data" / "postmaster.pid").read_text().split()[0])
    return cpu_seconds(postmaster, with_reaped=True)


def _descendants(pid: int) -> list[int]:
    found = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:  # ended meanwhile (a backend whose connection closed)
        return found
    for task in tasks:
        try:
            children = [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found
