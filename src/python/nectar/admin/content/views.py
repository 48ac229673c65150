"""Placeholder: the content pages (filled in by the admin issue)."""

from flask import Blueprint

content = Blueprint("content", __name__, url_prefix="/content")
