import pytest

from nectar.shared.config import SERVICE_ROLES, ConfigError, Role, Service, database_url, load_settings

VALID = "postgresql://nectar_app_user:secret@db.example:5432/nectarstudio_ai"
ALL_URLS = {role.url_variable: VALID for role in Role}


def test_urls_are_pinned_to_psycopg_3():
    url = database_url(Role.APP, {"DATABASE_URL": VALID, "ADMIN_DATABASE_URL": VALID})
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.port, url.database, url.username) == (
        "db.example",
        5432,
        "nectarstudio_ai",
        "nectar_app_user",
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not a url", "DATABASE_URL is not a database URL"),
        ("mysql://u:p@h/db", "DATABASE_URL must be a postgresql:// URL, not mysql://"),
        ("postgresql://u:p@h:5432", "DATABASE_URL names no database"),
        ("postgresql://h:5432/db", "DATABASE_URL names no user"),
    ],
)
def test_a_malformed_url_is_refused_with_a_one_line_reason(raw, message):
    with pytest.raises(ConfigError) as error:
        database_url(Role.APP, {"DATABASE_URL": raw})
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_setting_one_url_turns_the_embedded_database_off_for_every_role():
    with pytest.raises(ConfigError, match="MARKETING_DATABASE_URL is not set; DATABASE_URL is"):
        database_url(Role.MARKETING, {"DATABASE_URL": VALID})


def test_production_needs_a_long_secret_key_and_real_database_urls():
    with pytest.raises(ConfigError, match="SECRET_KEY is not set"):
        load_settings(Service.CORE, {**ALL_URLS, "NECTAR_ENV": "production"})
    with pytest.raises(ConfigError, match="too short"):
        load_settings(Service.CORE, {**ALL_URLS, "NECTAR_ENV": "production", "SECRET_KEY": "short"})
    with pytest.raises(ConfigError, match="production needs database URLs"):
        load_settings(Service.CORE, {"NECTAR_ENV": "production", "SECRET_KEY": "x" * 40})
    settings = load_settings(Service.CORE, {**ALL_URLS, "NECTAR_ENV": "production", "SECRET_KEY": "x" * 40})
    assert settings.is_production


def test_a_ca_bundle_that_is_not_there_is_refused_at_start(tmp_path):
    with pytest.raises(ConfigError, match="REQUESTS_CA_BUNDLE names .* which does not exist"):
        load_settings(Service.CORE, {**ALL_URLS, "REQUESTS_CA_BUNDLE": str(tmp_path / "missing.pem")})
    (tmp_path / "ca.pem").write_text("")
    settings = load_settings(Service.CORE, {**ALL_URLS, "REQUESTS_CA_BUNDLE": str(tmp_path / "ca.pem")})
    assert settings.outbound_ca_bundle == str(tmp_path / "ca.pem")
    assert load_settings(Service.CORE, ALL_URLS).outbound_ca_bundle is None


@pytest.mark.parametrize(
    ("service", "port"), [(Service.CORE, 3001), (Service.ADMIN, 4001), (Service.MARKETING, 5001)]
)
def test_each_service_has_its_default_port_and_honours_port(service, port):
    assert load_settings(service, ALL_URLS).port == port
    assert load_settings(service, {**ALL_URLS, "PORT": "8080"}).port == 8080


@pytest.mark.parametrize(("value", "message"), [("abc", "whole number"), ("70000", "between 1 and 65535")])
def test_a_bad_port_is_refused(value, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(Service.CORE, {**ALL_URLS, "PORT": value})


def test_an_unknown_environment_is_refused():
    with pytest.raises(ConfigError, match="NECTAR_ENV must be one of"):
        load_settings(Service.CORE, {**ALL_URLS, "NECTAR_ENV": "staging"})


PORTS = {"CORE_PORT": "13001", "MARKETING_PORT": "15001", "ADMIN_PORT": "14001"}


@pytest.mark.parametrize("service", list(Service))
def test_service_ports_carry_into_every_url_derived_from_them(service):
    settings = load_settings(service, {**ALL_URLS, **PORTS})
    expected = {
        Service.CORE: "http://127.0.0.1:13001",
        Service.MARKETING: "http://127.0.0.1:15001",
        Service.ADMIN: "http://127.0.0.1:14001",
    }
    assert settings.service_urls == expected
    assert settings.public_urls == expected
    assert settings.port == int(PORTS[f"{service.upper()}_PORT"])
    assert settings.public_url == expected[service]


def test_port_is_where_this_service_listens_and_explicit_urls_win_over_ports():
    settings = load_settings(
        Service.MARKETING,
        {
            **ALL_URLS,
            **PORTS,
            "PORT": "8080",
            "CORE_API_URL": "http://core.internal:3001",
            "CORE_PUBLIC_URL": "https://app.example.com/",
        },
    )
    assert settings.port == 8080
    assert settings.service_urls[Service.MARKETING] == settings.public_url == "http://127.0.0.1:8080"
    assert settings.service_urls[Service.CORE] == "http://core.internal:3001"
    assert settings.public_urls[Service.CORE] == "https://app.example.com"
    assert (
        settings.service_urls[Service.ADMIN]
        == settings.public_urls[Service.ADMIN]
        == "http://127.0.0.1:14001"
    )


def test_without_ports_every_url_is_on_the_default_port():
    settings = load_settings(Service.CORE, ALL_URLS)
    assert settings.service_urls == {
        service: f"http://127.0.0.1:{service.default_port}" for service in Service
    }
    assert settings.public_urls == settings.service_urls


def test_a_bad_service_port_is_refused():
    with pytest.raises(ConfigError, match="ADMIN_PORT must be between 1 and 65535"):
        load_settings(Service.CORE, {**ALL_URLS, "ADMIN_PORT": "0"})


def test_without_urls_reading_settings_names_what_to_do():
    with pytest.raises(
        ConfigError, match="MIGRATION_DATABASE_URL is not set and the embedded database was not started"
    ):
        database_url(Role.OWNER, {})
    with pytest.raises(
        ConfigError, match="MIGRATION_DATABASE_URL is not set; production needs database URLs"
    ):
        database_url(Role.OWNER, {"NECTAR_ENV": "production"})


@pytest.mark.parametrize("service", list(Service))
def test_each_service_listens_on_its_own_url_or_by_default_on_its_database_url(service):
    role = SERVICE_ROLES[service]
    assert load_settings(service, ALL_URLS).listen_url == load_settings(service, ALL_URLS).database_url
    direct = VALID.replace("db.example:5432", "primary.example:5432")
    settings = load_settings(service, {**ALL_URLS, role.listen_url_variable: direct})
    assert settings.listen_url.host == "primary.example" and settings.database_url.host == "db.example"
    with pytest.raises(ConfigError, match=f"^{role.listen_url_variable} is not a database URL"):
        load_settings(service, {**ALL_URLS, role.listen_url_variable: "pgbouncer:6432"})


def test_the_cache_bound_is_30_seconds_unless_set_within_an_hour():
    assert load_settings(Service.CORE, ALL_URLS).cache_max_age == 30
    assert load_settings(Service.CORE, {**ALL_URLS, "CACHE_MAX_AGE_SECONDS": "5"}).cache_max_age == 5
    with pytest.raises(ConfigError, match="CACHE_MAX_AGE_SECONDS must be between 1 and 3600"):
        load_settings(Service.CORE, {**ALL_URLS, "CACHE_MAX_AGE_SECONDS": "0"})
