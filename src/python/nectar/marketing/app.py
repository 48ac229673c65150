"""The marketing service's Flask app (the public; docs/architecture.md)."""

from __future__ import annotations

from flask import Flask

from nectar.marketing.billing.views import billing
from nectar.marketing.extensions import csrf
from nectar.marketing.leads.views import leads
from nectar.marketing.newsletter.views import newsletter
from nectar.marketing.site.views import site
from nectar.schema.migrate import head_revision
from nectar.shared.config import Service, Settings, load_settings
from nectar.shared.web import create_service_app

SERVICE = Service.MARKETING


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings(SERVICE)
    app = create_service_app(settings, __package__, head_revision)
    app.config.update(WTF_CSRF_TIME_LIMIT=None)  # tokens live as long as the session
    csrf.init_app(app)
    for blueprint in (site, leads, newsletter, billing):
        app.register_blueprint(blueprint)
    return app
