"""Absolute links for emails, from the public address in settings (not the request's Host header,
which a client controls)."""

from flask import current_app, url_for


def external_url(endpoint: str, **values) -> str:
    settings = current_app.config["NECTAR_SETTINGS"]
    return settings.public_url + url_for(endpoint, **values)
