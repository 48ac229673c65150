"""The benchmarks' PostgreSQL (var/bench-postgres), with production durability unless asked
otherwise: fsync, synchronous commits and full-page writes off flatter anything that writes."""

from __future__ import annotations

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
