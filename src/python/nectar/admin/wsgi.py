"""For a plain WSGI server: `gunicorn nectar.admin.wsgi:app`. The binary's `serve` builds the same app."""

from nectar.admin.app import create_app

app = create_app()
