"""Placeholder: the site pages (filled in by the marketing issue)."""

from flask import Blueprint

site = Blueprint("site", __name__)
