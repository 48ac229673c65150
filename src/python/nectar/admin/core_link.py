"""Admin's client for core's service contract, built from the app's settings."""

from __future__ import annotations

from flask import current_app

from nectar.core.contract import CoreClient
from nectar.shared.config import Service


def core_client() -> CoreClient:
    """Writes to core's domain (users, organizations) go through this, so core's rules apply."""
    client = current_app.extensions.get("nectar_core_client")
    if client is None:
        settings = current_app.config["NECTAR_SETTINGS"]
        # Admin's own credential (CORE_ADMIN_TOKEN): marketing's cannot touch customer accounts.
        client = CoreClient(settings.service_urls[Service.CORE], settings.admin_service_token)
        current_app.extensions["nectar_core_client"] = client
    return client
