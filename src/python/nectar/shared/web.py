"""What every service's Flask app has in common: settings, the database, errors, headers and health.

`create_service_app` builds that base; each service's `create_app` adds its own blueprints.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    jsonify,
    make_response,
    request,
    send_from_directory,
    url_for,
)
from sqlalchemy import text
from sqlalchemy.exc import DataError, SQLAlchemyError
from werkzeug.exceptions import HTTPException, InternalServerError, MethodNotAllowed
from werkzeug.middleware.proxy_fix import ProxyFix

from nectar.shared.bad_input import CheckedRequest, StrictJSONProvider, check_address, check_body
from nectar.shared.config import Settings
from nectar.shared.database import db, engine_options, is_database_outage
from nectar.shared.observe import observe_app
from nectar.shared.rejection import InputRejected

PROBLEM_JSON = "application/problem+json"

shared_ui = Blueprint(
    "shared_ui",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static/shared",
)
ICON_MAX_AGE = 7 * 24 * 3600


@shared_ui.get("/favicon.ico")
def favicon():
    """Browsers ask every site for /favicon.ico whatever the page links: the same icon as the pages'."""
    return send_from_directory(
        shared_ui.static_folder,
        "icons/favicon.ico",
        mimetype="image/vnd.microsoft.icon",
        max_age=ICON_MAX_AGE,
    )


def problem(status: int, detail: str | None = None, *, title: str | None = None, **extra):
    """An RFC 9457 problem document with the given status."""
    body = {"type": "about:blank", "title": title or HTTPStatus(status).phrase, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    response = jsonify(body)
    response.status_code = status
    response.mimetype = PROBLEM_JSON
    return response


def problem_later(status: int, detail: str, retry_after: int) -> Response:
    """A problem document for a refusal that passes (429, 503): with Retry-After, in seconds."""
    response = problem(status, detail)
    response.headers["Retry-After"] = str(retry_after)
    return response


def limit_reached(detail: str, limit: int, resets_at: float) -> Response:
    """A 429 problem for a limit reached: the limit, when the count starts again (`resets_at`, a
    Unix time, as ISO 8601 UTC) and Retry-After until then."""
    response = problem(
        429,
        detail,
        limit=limit,
        resets_at=datetime.fromtimestamp(math.ceil(resets_at), UTC).isoformat().replace("+00:00", "Z"),
    )
    response.headers["Retry-After"] = str(max(1, math.ceil(resets_at - time.time())))
    return response


def external_url(endpoint: str, **values) -> str:
    """An absolute address of `endpoint` (for emails, Stripe, feeds), from the public address in the
    app's settings, never the request's Host header, which a client controls."""
    return current_app.config["NECTAR_SETTINGS"].public_url + url_for(endpoint, **values)


def wants_json() -> bool:
    if request.path.startswith(("/api/", "/internal/")) or request.is_json:
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json", PROBLEM_JSON])
    return best in ("application/json", PROBLEM_JSON)


def safe_next_path(target: str | None, default: str) -> str:
    """`target` when it is a path on this site, else `default`: a sign-in page's "next" must not be
    an open redirect that lends our address to a phishing link."""
    # Browsers read "/\\host" as "//host", so a backslash disqualifies a target too.
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and not urlsplit(target).netloc
    ):
        return target
    return default


FORM_REFUSED = 422


def form_status(*forms) -> int:
    """The status of a page showing `forms`: 422 when one was refused (its messages stand next to
    its fields), else 200. Every service answers a refused form this way."""
    return FORM_REFUSED if any(form.errors for form in forms) else 200


def error_response(status: int, detail: str | None, **extra):
    """The error as the client wants it: a problem document for APIs (with `extra` members), a page
    for browsers."""
    if wants_json():
        return problem(status, detail, **extra)
    return error_page(status, detail)


def error_page(status: int, detail: str | None):
    """The error page, from the shared layout alone: not through render_template, whose context
    processors may need the database (Flask-Login loads the signed-in user), which may be what
    failed."""
    settings: Settings = current_app.config["NECTAR_SETTINGS"]
    page = current_app.jinja_env.get_template("error.html").render(
        status=status,
        title=HTTPStatus(status).phrase,
        detail=detail,
        service_name=str(settings.service),
        environment=settings.environment,
    )
    return make_response(page, status)


def _handle_http_error(error: HTTPException):
    if isinstance(error, InternalServerError) and is_database_outage(error.original_exception):
        # Raised past the views (in an after_request hook, say), where Flask hands it on as a 500.
        return _handle_unexpected_error(error.original_exception)
    response = error_response(error.code or 500, error.description)
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        response.headers["Allow"] = ", ".join(error.valid_methods)  # RFC 9110: a 405 says what is
    return response


def _handle_not_found(error: LookupError):
    """Services raise LookupError for a row that is not there (the session is rolled back at
    teardown). KeyError and IndexError, its subclasses too, are bugs: logged, and a 500."""
    if isinstance(error, KeyError | IndexError):
        return _handle_unexpected_error(error)
    return error_response(404, "There is nothing here.")


UNEXPECTED_ERROR = "Something went wrong on our side. It has been logged."
DATABASE_UNAVAILABLE = "The service cannot reach its database just now. Try again in a few seconds."
DATABASE_RETRY_AFTER_SECONDS = 10


def unexpected_error_response(error: Exception, method: str, path: str, *, page: bool = False):
    """The answer to an error no view expected, logged. A database outage is not a bug: 503 with
    Retry-After, logged in one line; anything else is a 500 with its traceback in the log. A
    problem document, or the error page when `page`. Core's tenant endpoint calls, answered
    outside Flask's request handling, answer their errors through it too."""
    if is_database_outage(error):
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        current_app.logger.warning("database unavailable on %s %s: %s", method, path, reason)
        status, detail = 503, DATABASE_UNAVAILABLE
    else:
        current_app.logger.error("unhandled error on %s %s", method, path, exc_info=error)
        status, detail = 500, UNEXPECTED_ERROR
    response = error_page(status, detail) if page else problem(status, detail)
    if status == 503:
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return response


def _handle_unexpected_error(error: Exception):
    return unexpected_error_response(error, request.method, request.path, page=not wants_json())


RAW_INPUT_BLUEPRINTS = "NECTAR_RAW_INPUT_BLUEPRINTS"


def keeps_raw_input(blueprint: Blueprint) -> Blueprint:
    """Leaves a blueprint's request bodies unread by the edge's checks (its address and headers are
    still checked), for views that read their body raw and check it with nectar.shared.bad_input
    themselves (core's incoming webhooks: their signature covers the exact bytes). Returns the blueprint."""

    def register(state) -> None:
        state.app.config.setdefault(RAW_INPUT_BLUEPRINTS, set()).add(blueprint.name)

    blueprint.record_once(register)
    return blueprint


def rejection_response(rejected: InputRejected):
    """The one answer to input rejected, in every service: a problem document with its status
    (422, or 400/415 for input that could not be read) and an `errors` entry per problem, or, for
    a browser, the error page saying why (forms show their problems on the page themselves:
    nectar.shared.rejection.show_on_form)."""
    return error_response(rejected.status, rejected.detail, errors=rejected.errors())


def _refuse_bad_input():
    """before_request of every service: input no view could store is refused here, once, by the rules
    of nectar.shared.bad_input, instead of failing deep in a view as a 500."""
    try:
        check_address(request)
        if request.blueprint not in current_app.config.get(RAW_INPUT_BLUEPRINTS, ()):
            check_body(request)
    except InputRejected as bad:
        return rejection_response(bad)
    return None


DATABASE_REFUSED = "A value is too long or out of range for where it is stored."


def _handle_data_error(error: DataError):
    """The last line behind validation: a value the database refuses (too long, out of range) is the
    client's 422, never a 500. Logged as an error all the same: the value should have been checked first."""
    db.session.rollback()
    current_app.logger.error(
        "database refused a value on %s %s: %s", request.method, request.path, error.orig
    )
    return error_response(422, DATABASE_REFUSED)


def security_headers(response):
    """after_request of every service (and core's tenant endpoints, which answer outside Flask's
    request handling)."""
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
    )
    if current_app.config["SESSION_COOKIE_SECURE"]:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    return response


def health_blueprint(
    expected_revision: Callable[[], str], ready_details: Callable[[], dict] | None = None
) -> Blueprint:
    """`/healthz`: the process answers. `/readyz`: its role connects and the schema is at
    `expected_revision`; `ready_details()`, if given, adds what works degraded without making the
    service unready (core: whether it hears route changes)."""
    health = Blueprint("health", __name__)

    @health.get("/healthz")
    def healthz():
        return jsonify(status="ok", service=current_app.config["NECTAR_SERVICE"])

    @health.get("/readyz")
    def readyz():
        service = current_app.config["NECTAR_SERVICE"]
        started = time.perf_counter()
        expected = expected_revision()
        try:
            with db.engine.connect() as conn:
                conn.execute(text("SET LOCAL statement_timeout = 2000"))
                current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except SQLAlchemyError as error:
            current_app.logger.warning("readiness: database check failed: %s", error.__class__.__name__)
            return problem(
                503,
                "The database cannot be reached with this service's role.",
                service=service,
                database="down",
            )
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        if current != expected:
            return problem(
                503,
                f"The schema is at {current or 'nothing'}; this build expects {expected}. Run the migrate command.",
                service=service,
                database="up",
                schema=current,
                expected_schema=expected,
            )
        details = ready_details() if ready_details is not None else {}
        return jsonify(
            status="ready", service=service, database="up", schema=current, latency_ms=latency_ms, **details
        )

    return health


def create_service_app(
    settings: Settings,
    import_name: str,
    expected_revision: Callable[[], str],
    *,
    middleware: Callable[[Flask], Callable] | None = None,
    ready_details: Callable[[], dict] | None = None,
) -> Flask:
    """The Flask app every service starts from, configured from `settings`. `middleware(app)`, if
    given, wraps the app's WSGI callable inside the proxy handling, so it sees the client's
    address and scheme as Flask's views do. Outermost: request ids, metrics and traces (observe_app).
    `ready_details` adds to a ready /readyz's answer (health_blueprint)."""
    app = Flask(import_name)
    app.request_class, app.json = CheckedRequest, StrictJSONProvider(app)
    secure_cookies = settings.environment == "production"
    app.config.update(
        NECTAR_SERVICE=str(settings.service),
        NECTAR_SETTINGS=settings,
        SECRET_KEY=settings.secret_key,
        TESTING=settings.is_testing,
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(str(settings.service)),
        # One cookie name per service: browsers share cookies across ports of one host.
        SESSION_COOKIE_NAME=f"nectar_{settings.service}_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure_cookies,
        MAX_CONTENT_LENGTH=1024 * 1024,
    )
    if middleware is not None:
        app.wsgi_app = middleware(app)
    if settings.trusted_proxy_hops:
        # Behind a load balancer: the client's address and scheme come from its X-Forwarded-* headers,
        # so per-address limits and secure cookies see the real client, not the balancer.
        hops = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    db.init_app(app)
    app.register_blueprint(shared_ui)
    app.register_blueprint(health_blueprint(expected_revision, ready_details))
    app.register_error_handler(HTTPException, _handle_http_error)
    app.register_error_handler(LookupError, _handle_not_found)
    app.register_error_handler(DataError, _handle_data_error)
    app.register_error_handler(InputRejected, rejection_response)
    app.register_error_handler(Exception, _handle_unexpected_error)
    app.before_request(_refuse_bad_input)
    app.after_request(security_headers)

    @app.context_processor
    def _service_name():
        return {"service_name": str(settings.service), "environment": settings.environment}

    observe_app(app, settings)
    return app
