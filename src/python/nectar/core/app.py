"""The core service's Flask app (customers; docs/architecture.md)."""

from __future__ import annotations

from flask import Flask

from nectar.core.access import PermissionDenied, resolve_request_scope
from nectar.core.accounts.views import accounts
from nectar.core.alerts.views import alert_pages
from nectar.core.api import alerts as _alert_routes  # noqa: F401 - adds routes to `api`
from nectar.core.api import connectors as _connector_routes  # noqa: F401 - adds routes to `api`
from nectar.core.api import integrations as _integration_routes  # noqa: F401 - adds routes to `api`
from nectar.core.api import runs as _run_routes  # noqa: F401 - adds routes to `api`
from nectar.core.api import variables as _variable_routes  # noqa: F401 - adds routes to `api`
from nectar.core.api import workflows as _workflow_routes  # noqa: F401 - adds routes to `api`
from nectar.core.api.schemas import schemas
from nectar.core.api.views import api
from nectar.core.api_keys.views import api_keys
from nectar.core.builder.views import workflow_pages
from nectar.core.dashboard import dashboard
from nectar.core.endpoints.routing import route_table
from nectar.core.endpoints.serve import NoSessionForTenantEndpoints, TenantEndpointCalls, tenant_endpoints
from nectar.core.extensions import csrf, login_manager
from nectar.core.org_mail.views import org_mail
from nectar.core.orgs.views import orgs
from nectar.core.provisioning.views import service_api
from nectar.core.runs.views import approval_pages, run_signals
from nectar.core.variables.views import variable_pages
from nectar.core.workflows.outbound import OutboundPolicy
from nectar.schema.migrate import head_revision
from nectar.shared.config import Service, Settings, load_settings
from nectar.shared.database import db
from nectar.shared.encryption import key_ring
from nectar.shared.web import create_service_app, error_response

SERVICE = Service.CORE


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings(SERVICE)
    app = create_service_app(
        settings,
        __package__,
        head_revision,
        middleware=TenantEndpointCalls,
        ready_details=lambda: route_table(db.engine, settings).listener_state(),
    )
    app.session_interface = NoSessionForTenantEndpoints()
    app.config.update(WTF_CSRF_TIME_LIMIT=None)  # tokens live as long as the session
    csrf.init_app(app)
    login_manager.init_app(app)
    app.before_request(resolve_request_scope)
    app.config["NECTAR_OUTBOUND_POLICY"] = OutboundPolicy.from_setting(
        settings.outbound_allowlist, settings.outbound_ca_bundle
    )
    app.config["NECTAR_KEY_RING"] = key_ring(settings)
    for blueprint in (
        dashboard,
        accounts,
        orgs,
        org_mail,
        api_keys,
        api,
        schemas,
        service_api,
        tenant_endpoints,
        workflow_pages,
        approval_pages,
        run_signals,
        alert_pages,
        variable_pages,
    ):
        app.register_blueprint(blueprint)
    # Services raise this; every page and API route answers it the same way (as create_service_app
    # does LookupError for every service).
    app.register_error_handler(PermissionDenied, lambda error: error_response(403, str(error)))

    @app.context_processor
    def _navigation():
        from flask import g

        return {"org_context": g.get("org_context")}

    return app
