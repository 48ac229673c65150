"""Absolute links for emails, the sitemap and the feed, from the public address in settings (not the
request's Host header, which a client controls)."""

from flask import current_app, url_for

PRICING_ENDPOINT = "billing.pricing"


def public_base_url() -> str:
    return current_app.config["NECTAR_SETTINGS"].public_url


def external_url(endpoint: str, **values) -> str:
    return public_base_url() + url_for(endpoint, **values)


def pricing_url() -> str:
    """Billing's pricing page; by path while that blueprint has no such view, so no link breaks."""
    if PRICING_ENDPOINT in current_app.view_functions:
        return url_for(PRICING_ENDPOINT)
    return "/pricing"
