"""Placeholder: the billing pages (filled in by the admin issue)."""

from flask import Blueprint

billing = Blueprint("billing", __name__, url_prefix="/billing")
