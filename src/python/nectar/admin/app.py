"""The admin service's Flask app (staff; DESIGN.md)."""

from __future__ import annotations

from flask import Flask, render_template

from nectar.schema.migrate import head_revision
from nectar.shared.config import Service, Settings, load_settings
from nectar.shared.web import create_service_app

SERVICE = Service.ADMIN


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings(SERVICE)
    app = create_service_app(settings, __package__, head_revision)

    @app.get("/")
    def home():
        return render_template("admin/home.html")

    return app
