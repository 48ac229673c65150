"""Admin binary commands that work across tenants as nectar_admin."""

from __future__ import annotations

import argparse

from sqlalchemy import create_engine, text

from nectar.shared.cli import Command
from nectar.shared.config import Service, load_settings
from nectar.shared.encryption import key_ring


def _rotate(args: argparse.Namespace) -> int:
    """Re-encrypts every stored credential with the newest key of NECTAR_ENCRYPTION_KEYS."""
    settings = load_settings(Service.ADMIN)
    keys = key_ring(settings)
    engine = create_engine(settings.database_url)
    rotated = 0
    with engine.begin() as conn:
        rows = conn.execute(
            text(
                "SELECT id, credentials_ciphertext FROM integration_connections WHERE credentials_ciphertext IS NOT NULL FOR UPDATE"
            )
        ).all()
        for row_id, ciphertext in rows:
            new, key_id = keys.rotate(bytes(ciphertext))
            conn.execute(
                text(
                    "UPDATE integration_connections SET credentials_ciphertext = :c, key_id = :k WHERE id = :id"
                ),
                {"c": new, "k": key_id, "id": row_id},
            )
            rotated += 1
    engine.dispose()
    print(f"re-encrypted {rotated} credential(s) with key {keys.current_id}")
    return 0


rotate_credentials_command = Command(
    help="re-encrypt stored credentials with the newest NECTAR_ENCRYPTION_KEYS key (run after adding one)",
    run=_rotate,
)
