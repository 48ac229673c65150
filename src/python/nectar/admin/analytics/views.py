"""Placeholder: the analytics pages (filled in by the admin issue)."""

from flask import Blueprint

analytics = Blueprint("analytics", __name__, url_prefix="")
