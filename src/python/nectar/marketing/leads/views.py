"""Placeholder: the leads pages (filled in by the marketing issue)."""

from flask import Blueprint

leads = Blueprint("leads", __name__)
