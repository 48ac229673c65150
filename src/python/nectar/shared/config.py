"""Settings from the environment, read and validated once when a process starts.

Every variable the services read is named here, so the README's configuration table and this module
can be checked against each other. Request code never reads the environment; it reads `Settings`.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import getaddresses
from enum import StrEnum
from functools import cached_property
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError


class ConfigError(Exception):
    """A setting is missing or malformed. The message is one line a person can act on."""


class Service(StrEnum):
    CORE = "core"
    MARKETING = "marketing"
    ADMIN = "admin"

    @property
    def default_port(self) -> int:
        return {Service.CORE: 3001, Service.ADMIN: 4001, Service.MARKETING: 5001}[self]


class Role(StrEnum):
    """The database roles (docs/architecture.md): one per service, plus the owner that only migrations use."""

    OWNER = "nectar_owner"
    APP = "nectar_app_user"
    MARKETING = "nectar_marketing"
    ADMIN = "nectar_admin"

    @property
    def url_variable(self) -> str:
        return {
            Role.OWNER: "MIGRATION_DATABASE_URL",
            Role.APP: "DATABASE_URL",
            Role.MARKETING: "MARKETING_DATABASE_URL",
            Role.ADMIN: "ADMIN_DATABASE_URL",
        }[self]

    @property
    def listen_url_variable(self) -> str:
        """Where this role LISTENs: a direct connection, since a transaction pooler cannot keep one."""
        return self.url_variable.replace("_URL", "_LISTEN_URL")

    @property
    def attributes(self) -> str:
        """CREATE ROLE attributes: only admin bypasses row-level security; nobody is a superuser."""
        bypass = "BYPASSRLS" if self is Role.ADMIN else "NOBYPASSRLS"
        return f"LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION {bypass}"


SERVICE_ROLES = {Service.CORE: Role.APP, Service.MARKETING: Role.MARKETING, Service.ADMIN: Role.ADMIN}
DATABASE_NAME = "nectarstudio_ai"
ENVIRONMENTS = ("development", "test", "production")


def env_str(environ: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = environ.get(name, "").strip()
    return value or default


def env_int(environ: Mapping[str, str], name: str, default: int, *, low: int = 0, high: int = 2**31) -> int:
    raw = env_str(environ, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, not {value}")
    return value


def env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env_str(environ, name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def environment_name(environ: Mapping[str, str]) -> str:
    """NECTAR_ENV as given (load_settings checks it is one of ENVIRONMENTS), default development."""
    return env_str(environ, "NECTAR_ENV", "development")


def parse_database_url(name: str, raw: str) -> URL:
    """Validates a PostgreSQL URL and pins the psycopg 3 driver, whichever spelling was given."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigError(
            f"{name} is not a database URL (expected postgresql://user:password@host:5432/db)"
        ) from None
    if url.get_backend_name() not in ("postgresql", "postgres"):
        raise ConfigError(f"{name} must be a postgresql:// URL, not {url.get_backend_name()}://")
    if not url.database:
        raise ConfigError(f"{name} names no database (expected postgresql://user:password@host:5432/db)")
    if not url.username:
        raise ConfigError(f"{name} names no user (expected postgresql://user:password@host:5432/db)")
    return url.set(drivername="postgresql+psycopg")


def uses_embedded_database(environ: Mapping[str, str]) -> bool:
    """No database URL at all means the shared embedded server under var/ (docs/architecture.md)."""
    return not any(env_str(environ, role.url_variable) for role in Role)


def database_url(role: Role, environ: Mapping[str, str] | None = None) -> URL:
    """The URL a process uses to connect as `role`, from the environment. Reading it starts nothing:
    a command that may use the embedded server starts it first and sets these variables
    (`embedded_postgres.use_embedded_database`)."""
    environ = os.environ if environ is None else environ
    raw = env_str(environ, role.url_variable)
    if raw is None:
        if uses_embedded_database(environ) and env_str(environ, "NECTAR_ENV") == "production":
            raise ConfigError(
                f"{role.url_variable} is not set; production needs database URLs "
                f"(the embedded database is for development)"
            )
        if uses_embedded_database(environ):
            raise ConfigError(
                f"{role.url_variable} is not set and the embedded database was not started; "
                f"set the database URLs, or run a binary's command (e.g. `core.pex serve`), which starts it"
            )
        given = next(r.url_variable for r in Role if env_str(environ, r.url_variable))
        raise ConfigError(
            f"{role.url_variable} is not set; {given} is, so the embedded database is off and "
            f"each role needs its own URL (README: Configuration)"
        )
    return parse_database_url(role.url_variable, raw)


def listen_url(role: Role, environ: Mapping[str, str] | None = None) -> URL:
    """The direct URL a process LISTENs on as `role` (<ROLE URL>_LISTEN_URL, e.g. DATABASE_LISTEN_URL):
    behind PgBouncer in transaction mode the role's URL goes through the pooler, which cannot keep a
    LISTEN. Default: the role's own URL."""
    environ = os.environ if environ is None else environ
    raw = env_str(environ, role.listen_url_variable)
    return database_url(role, environ) if raw is None else parse_database_url(role.listen_url_variable, raw)


# How old a per-process copy of database state may get (core's routes, API keys, suspensions, plans,
# quota counts) when no notification of a change arrives: CACHE_MAX_AGE_SECONDS, at most this.
CACHE_MAX_AGE_SECONDS = 30


def var_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where run-time state lives (the embedded database): NECTAR_VAR_DIR, default ./var."""
    environ = os.environ if environ is None else environ
    return Path(env_str(environ, "NECTAR_VAR_DIR", "var")).resolve()


def development_secret(path: Path, make: Callable[[], str]) -> str:
    """A secret made once for a var/ directory outside production (`make()` on first use), shared
    by every process using that directory. Written to a private file aside and linked into place,
    so a process starting at the same moment never reads half of it; if two race, the first wins."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, draft = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(make())
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(draft)
    return path.read_text().strip()


def embedded_database_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the services' embedded server keeps its data: var/postgres."""
    return var_dir(environ) / "postgres"


def service_port(service: Service, environ: Mapping[str, str]) -> int:
    """The port `service` listens on when it runs on this host: <SERVICE>_PORT, else its default.
    Every URL of that service that is not set explicitly is derived from it."""
    return env_int(environ, f"{service.upper()}_PORT", service.default_port, low=1, high=65535)


def local_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


LOG_FORMATS = ("json", "text")
METRICS_TOKEN_MIN_LENGTH = 16


@dataclass(frozen=True)
class Observability:
    """Metrics, traces and logs (issue 19). `metrics_token`: what a scrape of /metrics must present
    as a Bearer token (METRICS_TOKEN); without one, metrics are off in production and open
    elsewhere. `metrics_enabled`: /metrics served and requests counted (METRICS_ENABLED, default on
    where allowed). `worker_metrics_port`: where a `worker` process serves its /metrics
    (WORKER_METRICS_PORT; None: not served). `metrics_dir`: gunicorn's workers' shared metrics
    files (PROMETHEUS_MULTIPROC_DIR; None: a private temporary directory per serve). `otlp_endpoint`:
    where spans go over OTLP/HTTP (OTEL_EXPORTER_OTLP_ENDPOINT; None: no tracing at all).
    `log_format`: json or text (LOG_FORMAT), `log_level` (LOG_LEVEL)."""

    metrics_token: str | None = None
    metrics_enabled: bool = True
    worker_metrics_port: int | None = None
    worker_metrics_host: str = "0.0.0.0"  # noqa: S104 - HOST, as the web port
    metrics_dir: Path | None = None
    otlp_endpoint: str | None = None
    log_format: str = "text"
    log_level: str = "INFO"


def load_observability(environ: Mapping[str, str] | None = None) -> Observability:
    """The observability settings (Observability); raises ConfigError when one is unusable. Read
    before the rest, since logging starts before a command loads its settings."""
    environ = os.environ if environ is None else environ
    production = env_str(environ, "NECTAR_ENV", "development") == "production"
    token = env_str(environ, "METRICS_TOKEN")
    if token is not None and len(token) < METRICS_TOKEN_MIN_LENGTH:
        raise ConfigError(f"METRICS_TOKEN is too short (at least {METRICS_TOKEN_MIN_LENGTH} characters)")
    log_format = env_str(environ, "LOG_FORMAT", "json" if production else "text").lower()
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT must be json or text, not {log_format!r}")
    log_level = env_str(environ, "LOG_LEVEL", "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {log_level!r}")
    # Metrics are served (and requests counted) with a token, or outside production; METRICS_ENABLED
    # turns them off anywhere (an A/B of their cost), never on in production without a token.
    metrics_enabled = env_bool(environ, "METRICS_ENABLED", token is not None or not production)
    if metrics_enabled and production and token is None:
        raise ConfigError("METRICS_ENABLED needs METRICS_TOKEN in production: /metrics is never open there")
    worker_port = env_str(environ, "WORKER_METRICS_PORT")
    metrics_dir = env_str(environ, "PROMETHEUS_MULTIPROC_DIR")
    otlp_endpoint = env_str(environ, "OTEL_EXPORTER_OTLP_ENDPOINT")
    if otlp_endpoint is not None and not otlp_endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"OTEL_EXPORTER_OTLP_ENDPOINT must be an http(s):// URL, not {otlp_endpoint!r}")
    return Observability(
        metrics_token=token,
        metrics_enabled=metrics_enabled,
        worker_metrics_port=(
            None if worker_port is None else env_int(environ, "WORKER_METRICS_PORT", 0, low=1, high=65535)
        ),
        worker_metrics_host=env_str(environ, "HOST", Observability.worker_metrics_host),
        metrics_dir=Path(metrics_dir).resolve() if metrics_dir else None,
        otlp_endpoint=otlp_endpoint,
        log_format=log_format,
        log_level=log_level,
    )


def share_metrics_dir(path: Path) -> None:
    """Names gunicorn's workers' shared metrics directory in the environment, where prometheus-client
    (this process's and its forked workers') reads it: the one variable written rather than read."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


@dataclass(frozen=True)
class Settings:
    service: Service
    environment: str
    secret_key: str
    port: int
    database_url: URL
    # A direct connection for LISTEN (<ROLE URL>_LISTEN_URL; default database_url).
    listen_url: URL
    # How stale a per-process copy of database state may be (CACHE_MAX_AGE_SECONDS).
    cache_max_age: int = CACHE_MAX_AGE_SECONDS
    # Where each service reaches the others (HTTP contracts, health checks on the admin system page).
    service_urls: dict[Service, str] = field(default_factory=dict)
    # Credentials for core's service contract (/internal/v1), one per caller so each gets only its
    # part: CORE_SERVICE_TOKEN (marketing: provision accounts, read and set plans) and
    # CORE_ADMIN_TOKEN (admin: every call, customer accounts included).
    service_token: str | None = None
    admin_service_token: str | None = None
    # The address people use for each service, for links in pages and emails (<SERVICE>_PUBLIC_URL).
    public_urls: dict[Service, str] = field(default_factory=dict)
    # How many proxies (load balancers) in front may set X-Forwarded-For/-Proto (TRUSTED_PROXY_HOPS).
    trusted_proxy_hops: int = 0
    # Private or internal networks workflow HTTP steps may reach anyway (NECTAR_OUTBOUND_ALLOWLIST, CIDRs).
    outbound_allowlist: str = ""
    # CA certificates workflow and alert HTTPS calls trust instead of the bundled ones
    # (REQUESTS_CA_BUNDLE, the name requests itself reads: a private CA); None: the bundled ones.
    outbound_ca_bundle: str | None = None
    # Fernet keys for secrets at rest, newest first (NECTAR_ENCRYPTION_KEYS; see shared/encryption.py).
    encryption_keys: str = ""
    var_dir: Path = Path("var")
    # Fairness between organizations: a web process's request threads (WEB_THREADS) and how many of
    # them one organization's endpoint calls may hold at once (ORG_MAX_THREADS); core workers'
    # concurrent runs (WORKER_CONCURRENCY) and how many one organization's runs may take of all
    # workers' (ORG_MAX_WORKER_RUNS). Each share is half by default.
    web_threads: int = 4
    org_max_threads: int = 2
    worker_concurrency: int = 4
    org_max_worker_runs: int = 2
    observability: Observability = field(default_factory=Observability)

    @cached_property
    def listen_url_text(self) -> str:
        """listen_url as text, made once: a key that is cheap to hash on every call."""
        return self.listen_url.render_as_string(hide_password=False)

    @property
    def public_url(self) -> str:
        """The address people use for this service."""
        return self.public_urls[self.service]

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def is_testing(self) -> bool:
        return self.environment == "test"


def ca_bundle(environ: Mapping[str, str]) -> str | None:
    """REQUESTS_CA_BUNDLE: a file or directory of CA certificates, refused at start when it is not
    there (every HTTPS call a workflow makes would fail on it instead)."""
    path = env_str(environ, "REQUESTS_CA_BUNDLE", "") or None
    if path is not None and not Path(path).exists():
        raise ConfigError(f"REQUESTS_CA_BUNDLE names {path!r}, which does not exist")
    return path


def load_settings(service: Service, environ: Mapping[str, str] | None = None) -> Settings:
    """Reads one service's settings; raises ConfigError with a one-line reason when they are unusable."""
    environ = os.environ if environ is None else environ
    environment = env_str(environ, "NECTAR_ENV", "development")
    if environment not in ENVIRONMENTS:
        raise ConfigError(f"NECTAR_ENV must be one of {', '.join(ENVIRONMENTS)}, not {environment!r}")
    secret_key = env_str(environ, "SECRET_KEY")
    if secret_key is None:
        if environment == "production":
            raise ConfigError("SECRET_KEY is not set; production refuses to start without one")
        # Outside production a per-process key is fine: sessions just do not survive a restart.
        secret_key = secrets.token_urlsafe(32)
    elif environment == "production" and len(secret_key) < 32:
        raise ConfigError("SECRET_KEY is too short for production (at least 32 characters)")
    if environment == "production" and uses_embedded_database(environ):
        raise ConfigError(
            "production needs database URLs (DATABASE_URL and the others); the embedded one is for development"
        )

    # This service listens on PORT; the others where their <SERVICE>_PORT says (the dev launcher sets
    # them all). A URL not set explicitly follows the port, so a second stack on other ports never
    # talks to the first one.
    ports = {peer: service_port(peer, environ) for peer in Service}
    port = ports[service] = env_int(environ, "PORT", ports[service], low=1, high=65535)
    service_urls = {
        peer: env_str(environ, f"{peer.upper()}_API_URL", local_url(ports[peer])) for peer in Service
    }
    public_urls = {
        peer: env_str(environ, f"{peer.upper()}_PUBLIC_URL", local_url(ports[peer])).rstrip("/")
        for peer in Service
    }
    service_token = env_str(environ, "CORE_SERVICE_TOKEN")
    if service_token is not None and len(service_token) < 32:
        raise ConfigError("CORE_SERVICE_TOKEN is too short (at least 32 characters)")
    admin_service_token = env_str(environ, "CORE_ADMIN_TOKEN")
    if admin_service_token is not None and len(admin_service_token) < 32:
        raise ConfigError("CORE_ADMIN_TOKEN is too short (at least 32 characters)")
    if admin_service_token is not None and admin_service_token == service_token:
        raise ConfigError("CORE_ADMIN_TOKEN must differ from CORE_SERVICE_TOKEN (each caller has its own)")
    web_threads = env_int(environ, "WEB_THREADS", 4, low=1, high=64)
    worker_concurrency = env_int(environ, "WORKER_CONCURRENCY", 4, low=1, high=64)
    return Settings(
        service=service,
        environment=environment,
        secret_key=secret_key,
        port=port,
        database_url=database_url(SERVICE_ROLES[service], environ),
        listen_url=listen_url(SERVICE_ROLES[service], environ),
        cache_max_age=env_int(environ, "CACHE_MAX_AGE_SECONDS", CACHE_MAX_AGE_SECONDS, low=1, high=3600),
        service_urls=service_urls,
        service_token=service_token,
        admin_service_token=admin_service_token,
        trusted_proxy_hops=env_int(environ, "TRUSTED_PROXY_HOPS", 0, low=0, high=5),
        outbound_allowlist=env_str(environ, "NECTAR_OUTBOUND_ALLOWLIST", ""),
        outbound_ca_bundle=ca_bundle(environ),
        encryption_keys=env_str(environ, "NECTAR_ENCRYPTION_KEYS", ""),
        var_dir=var_dir(environ),
        public_urls=public_urls,
        web_threads=web_threads,
        org_max_threads=env_int(environ, "ORG_MAX_THREADS", max(1, web_threads // 2), low=1, high=64),
        worker_concurrency=worker_concurrency,
        org_max_worker_runs=env_int(
            environ, "ORG_MAX_WORKER_RUNS", max(1, worker_concurrency // 2), low=1, high=64
        ),
        observability=load_observability(environ),
    )


# One service's or one command's own settings, read here too so that no other module reads the
# environment (tests/shared/test_environment.py holds every module to that).


@dataclass(frozen=True)
class ServeSettings:
    """How `serve` runs gunicorn: HOST, WEB_CONCURRENCY (workers), FORWARDED_ALLOW_IPS."""

    host: str = "0.0.0.0"  # noqa: S104 - a service listens for its load balancer
    workers: int = 2
    forwarded_allow_ips: str = "127.0.0.1"


def load_serve_settings(environ: Mapping[str, str] | None = None) -> ServeSettings:
    """Reads gunicorn's settings for `serve`; raises ConfigError with a one-line reason."""
    environ = os.environ if environ is None else environ
    return ServeSettings(
        host=env_str(environ, "HOST", ServeSettings.host),
        workers=env_int(environ, "WEB_CONCURRENCY", ServeSettings.workers, low=1, high=64),
        forwarded_allow_ips=env_str(environ, "FORWARDED_ALLOW_IPS", ServeSettings.forwarded_allow_ips),
    )


def running_pex(environ: Mapping[str, str] | None = None) -> str | None:
    """The PEX file this process runs from (PEX, set by the PEX runtime), or None."""
    return env_str(os.environ if environ is None else environ, "PEX")


SMTP_SECURITY_MODES = ("starttls", "ssl", "none")
DEFAULT_MAIL_FROM = "Nectar Studio <hello@localhost>"


@dataclass(frozen=True)
class SmtpSettings:
    """The marketing worker's mail server. No host: nothing is sent, mail waits in the outbox."""

    host: str | None
    port: int = 587
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    security: str = "starttls"
    mail_from: str = DEFAULT_MAIL_FROM

    @property
    def configured(self) -> bool:
        return bool(self.host)

    @property
    def from_domain(self) -> str:
        address = getaddresses([self.mail_from])[0][1]
        return address.rpartition("@")[2] or "localhost"


def load_smtp_settings(environ: Mapping[str, str] | None = None) -> SmtpSettings:
    """Reads and checks the SMTP_* variables and MAIL_FROM; raises ConfigError with a one-line reason."""
    environ = os.environ if environ is None else environ
    security = (env_str(environ, "SMTP_SECURITY", "starttls") or "").lower()
    if security not in SMTP_SECURITY_MODES:
        raise ConfigError(f"SMTP_SECURITY must be one of {', '.join(SMTP_SECURITY_MODES)}, not {security!r}")
    username = env_str(environ, "SMTP_USERNAME") or env_str(environ, "SMTP_USER")
    password = env_str(environ, "SMTP_PASSWORD") or env_str(environ, "SMTP_PASS")
    if bool(username) != bool(password):
        raise ConfigError("SMTP_USERNAME and SMTP_PASSWORD go together: set both, or neither")
    mail_from = env_str(environ, "MAIL_FROM", DEFAULT_MAIL_FROM)
    if "@" not in getaddresses([mail_from])[0][1]:
        raise ConfigError(
            f"MAIL_FROM must be an address like 'Nectar Studio <hello@example.com>', not {mail_from!r}"
        )
    return SmtpSettings(
        host=env_str(environ, "SMTP_HOST"),
        port=env_int(environ, "SMTP_PORT", 587, low=1, high=65535),
        username=username,
        password=password,
        security=security,
        mail_from=mail_from,
    )


STRIPE_API_BASE = "https://api.stripe.com"
STRIPE_METER_EVENT_NAME = "nectar_runs"
STRIPE_PRICED_PLANS = ("starter", "pro")


@dataclass(frozen=True)
class StripeSettings:
    """Marketing's STRIPE_* variables as given; marketing's billing config decides what they mean."""

    secret_key: str | None = None
    webhook_secret: str | None = None
    price_ids: dict[str, str] = field(default_factory=dict)
    api_base: str = STRIPE_API_BASE
    # The Billing Meter paid plans' runs are reported to (its event name).
    meter_event_name: str = STRIPE_METER_EVENT_NAME


def load_stripe_settings(environ: Mapping[str, str] | None = None) -> StripeSettings:
    """Reads STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET, STRIPE_PRICE_<PLAN>, STRIPE_API_BASE and STRIPE_METER_EVENT_NAME
    (checked against the environment by nectar.marketing.billing.config)."""
    environ = os.environ if environ is None else environ
    price_ids = {
        plan: value
        for plan in STRIPE_PRICED_PLANS
        if (value := env_str(environ, f"STRIPE_PRICE_{plan.upper()}"))
    }
    return StripeSettings(
        secret_key=env_str(environ, "STRIPE_SECRET_KEY"),
        webhook_secret=env_str(environ, "STRIPE_WEBHOOK_SECRET"),
        price_ids=price_ids,
        api_base=env_str(environ, "STRIPE_API_BASE", STRIPE_API_BASE).rstrip("/"),
        meter_event_name=env_str(environ, "STRIPE_METER_EVENT_NAME", STRIPE_METER_EVENT_NAME),
    )


@dataclass(frozen=True)
class CliSettings:
    """What the `nectar` command-line tool takes from the environment: the server and key (over its
    config file), where that file lives, and credentials for connections a push creates."""

    url: str | None
    api_key: str | None
    config_file: Path
    connection_credentials: dict[str, str]  # NECTAR_CONNECTION_<NAME>: that connection's credentials (JSON)
    secrets: dict[str, str]  # NECTAR_SECRET_<NAME>: the value of secret NAME, for a push that creates it


CONNECTION_CREDENTIALS_PREFIX = "NECTAR_CONNECTION_"
SECRET_PREFIX = "NECTAR_SECRET_"  # noqa: S105 - a variable name, not a secret


def load_cli_settings(environ: Mapping[str, str] | None = None) -> CliSettings:
    """Reads the CLI's settings: NECTAR_URL, NECTAR_API_KEY, NECTAR_CONFIG (default
    ~/.config/nectar/config.json) and every NECTAR_CONNECTION_<NAME> and NECTAR_SECRET_<NAME> variable."""
    environ = os.environ if environ is None else environ
    config_file = env_str(environ, "NECTAR_CONFIG")
    return CliSettings(
        url=env_str(environ, "NECTAR_URL"),
        api_key=env_str(environ, "NECTAR_API_KEY"),
        config_file=Path(config_file) if config_file else Path.home() / ".config" / "nectar" / "config.json",
        connection_credentials={
            name.removeprefix(CONNECTION_CREDENTIALS_PREFIX): value
            for name, value in environ.items()
            if name.startswith(CONNECTION_CREDENTIALS_PREFIX) and value.strip()
        },
        secrets={
            name.removeprefix(SECRET_PREFIX): value
            for name, value in environ.items()
            if name.startswith(SECRET_PREFIX) and value
        },
    )
