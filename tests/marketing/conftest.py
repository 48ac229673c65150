"""Marketing test helpers: the app on the test database and a browser that submits its forms."""

from __future__ import annotations

import pytest

from nectar.marketing.app import create_app
from nectar.shared.config import Service
from tests.browser import Browser


@pytest.fixture(scope="module")
def marketing_app(settings_for):
    app = create_app(settings_for(Service.MARKETING))
    yield app
    from nectar.shared.database import db

    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def browser(marketing_app) -> Browser:
    return Browser(marketing_app, token_page="/contact")
