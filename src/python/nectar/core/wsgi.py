"""For a plain WSGI server: `gunicorn nectar.core.wsgi:app`. The binary's `serve` builds the same app."""

from nectar.core.app import create_app

app = create_app()
