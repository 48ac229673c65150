"""Placeholder: the newsletter pages (filled in by the marketing issue)."""

from flask import Blueprint

newsletter = Blueprint("newsletter", __name__)
