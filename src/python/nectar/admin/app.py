"""The admin service's Flask app (staff; docs/architecture.md)."""

from __future__ import annotations

from flask import Flask
from markupsafe import Markup

from nectar.admin.analytics.views import analytics
from nectar.admin.audit_log.views import audit_log
from nectar.admin.billing.service import money
from nectar.admin.billing.views import billing
from nectar.admin.content.views import content
from nectar.admin.extensions import csrf
from nectar.admin.leads.views import leads
from nectar.admin.listing import count_label, url_with
from nectar.admin.orgs.views import orgs
from nectar.admin.outbox.views import outbox
from nectar.admin.staff.access import StaffCookieInterface, can_write, current_staff, gate, is_superadmin
from nectar.admin.staff.views import staff
from nectar.admin.system.views import system
from nectar.admin.users.views import users
from nectar.schema.migrate import head_revision
from nectar.shared.config import Service, Settings, load_settings
from nectar.shared.encryption import key_ring
from nectar.shared.mail import linked_text
from nectar.shared.web import create_service_app

SERVICE = Service.ADMIN


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings(SERVICE)
    app = create_service_app(settings, __package__, head_revision)
    # Admin's own cookie salt: a core cookie signed with the same SECRET_KEY does not verify here.
    app.session_interface = StaffCookieInterface()
    app.config.update(WTF_CSRF_TIME_LIMIT=None)  # tokens live as long as the staff session
    app.config["NECTAR_KEY_RING"] = key_ring(settings)
    # The staff gate runs before the CSRF check: a visitor without a session is refused first.
    app.before_request(gate)
    csrf.init_app(app)
    app.url_map.strict_slashes = False  # /orgs and /orgs/ (as typed or linked) are one page
    for blueprint in (staff, users, orgs, system, audit_log, analytics, leads, billing, content, outbox):
        app.register_blueprint(blueprint)
    app.jinja_env.globals.update(
        current_staff=current_staff,
        can_write=can_write,
        is_superadmin=is_superadmin,
        url_with=url_with,
        count_label=count_label,
        money=money,
    )
    # Staff open the links of outbox messages (a set-password link, say) from the text part.
    # linked_text escapes the text: only its own <a> elements are markup.
    app.jinja_env.filters["linked_text"] = lambda text: Markup(linked_text(text or ""))  # noqa: S704
    return app
