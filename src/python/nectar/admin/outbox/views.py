"""Placeholder: the outbox pages (filled in by the admin issue)."""

from flask import Blueprint

outbox = Blueprint("outbox", __name__, url_prefix="/outbox")
