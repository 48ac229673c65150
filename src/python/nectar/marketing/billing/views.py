"""Placeholder: the billing pages (filled in by the marketing issue)."""

from flask import Blueprint

billing = Blueprint("billing", __name__)
