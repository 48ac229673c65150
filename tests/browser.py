"""A test client that submits forms the way a browser does: with the CSRF token its pages carry."""

from __future__ import annotations

import re


class Browser:
    """Posts forms with a CSRF token read from `token_page` (any page of the app that has a form)."""

    def __init__(self, app, token_page: str = "/login"):
        self.app = app
        self.client = app.test_client()
        self.token_page = token_page

    def get(self, url, **kwargs):
        return self.client.get(url, **kwargs)

    def csrf_token(self) -> str:
        page = self.client.get(self.token_page).get_data(as_text=True)
        match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page) or re.search(
            r'name="csrf_token" value="([^"]+)"', page
        )
        assert match, f"no CSRF token on {self.token_page}"
        return match.group(1)

    def post(self, url, data=None, **kwargs):
        data = dict(data or {})
        data.setdefault("csrf_token", self.csrf_token())
        return self.client.post(url, data=data, **kwargs)
