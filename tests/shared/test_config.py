import pytest

from nectar.shared.config import ConfigError, Role, Service, database_url, load_settings

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
