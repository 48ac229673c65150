"""For a plain WSGI server: `gunicorn nectar.marketing.wsgi:app`. The binary's `serve` builds the same app."""

from nectar.marketing.app import create_app

app = create_app()
