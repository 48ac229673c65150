"""The CLI against a live core: core served over HTTP on loopback (its test database), and `nectar`
run through its real entry point, in process, with the environment a user would set."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import pytest

from nectar.cli.main import main
from tests.core.conftest import Browser, core_app  # noqa: F401 - core_app is a fixture used here
from tests.serving import served


@pytest.fixture(scope="module")
def core_url(core_app):  # noqa: F811 - the fixture imported above
    with served(core_app) as url:
        yield url


@dataclass
class Result:
    status: int
    out: str
    err: str


@pytest.fixture
def nectar(capsys, monkeypatch, tmp_path):
    """Runs `nectar ARGS...` with NECTAR_URL/NECTAR_API_KEY (and any other variables) set."""
    monkeypatch.setenv("NECTAR_CONFIG", str(tmp_path / "nectar-config.json"))

    def run(*argv: str, url: str | None = None, key: str | None = None, env: dict | None = None) -> Result:
        with monkeypatch.context() as scoped:
            for name, value in {"NECTAR_URL": url, "NECTAR_API_KEY": key, **(env or {})}.items():
                if value is None:
                    scoped.delenv(name, raising=False)
                else:
                    scoped.setenv(name, value)
            capsys.readouterr()
            status = main(list(argv))
            captured = capsys.readouterr()
        return Result(status, captured.out, captured.err)

    return run


@dataclass
class Org:
    id: str
    key: str
    browser: Browser


def new_key(browser: Browser, *scopes: str) -> str:
    page = browser.post(
        "/org/api-keys", {"target": f"cli-{uuid.uuid4().hex[:6]}", "scopes": list(scopes or ["admin"])}
    ).get_data(as_text=True)
    match = re.search(r'id="new-token">(nsk_[^<]+)<', page)
    assert match, page
    return match.group(1)


@pytest.fixture
def make_org(core_app):  # noqa: F811
    """A new organization (its owner signed in in a browser) with an admin key."""

    def make() -> Org:
        browser = Browser(core_app)
        browser.sign_up()
        org_id = browser.create_org()
        return Org(str(org_id), new_key(browser, "admin"), browser)

    return make
