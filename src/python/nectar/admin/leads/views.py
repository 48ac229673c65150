"""Placeholder: the leads pages (filled in by the admin issue)."""

from flask import Blueprint

leads = Blueprint("leads", __name__, url_prefix="/leads")
