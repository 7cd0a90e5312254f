"""Durations and Settings.from_env."""

from __future__ import annotations

import pytest

from assaylib.config import ConfigError, Settings, listen_addr, parse_duration

JWKS = "/etc/assay/jwks/jwks.json"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("10m", 600.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        ("250ms", 0.25),
        ("1.5", 1.5),
        ("0", 0.0),
        (" 3 s ", 3.0),
        (".5s", 0.5),
    ],
)
def test_parse_duration_accepts_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "-5s", "10x", "1e3", "nan", "inf", "5 minutes", "s"])
def test_parse_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid duration"):
        parse_duration(text)


def test_defaults_when_env_empty() -> None:
    settings = Settings.from_env({}, allow_missing_keys=True)
    assert settings == Settings()
    assert settings.database_url == "postgresql+asyncpg://postgres@127.0.0.1:5432/assay"
    assert settings.archive_addr == "127.0.0.1:50052"
    assert settings.heartbeat_interval == 10.0
    assert settings.lease_timeout == 30.0
    assert settings.events_max_age == 7 * 86400
    assert settings.max_inflight_per_user == 10
    assert settings.metrics_addr == ""


def test_overrides_are_parsed() -> None:
    settings = Settings.from_env(
        {
            "ASSAY_JWKS_FILE": JWKS,
            "ASSAY_JWT_ISSUER": "https://kubernetes.default.svc, https://idp.example.com",
            "ASSAY_JWT_ROLES_CLAIM": "realm_access.roles",
            "ASSAY_ARCHIVE_ADDR": "archive:6000",
            "ASSAY_TOKEN_COST": "2",
            "ASSAY_STUCK_AFTER": "2m",
            "ASSAY_LEASE_TIMEOUT": "45s",
            "ASSAY_SWEEP_MAX_FRACTION": "0.25",
            "ASSAY_EVENTS_MAX_AGE": "1d",
            "ASSAY_LOG_LEVEL": "debug",
            "ASSAY_METRICS_ADDR": "127.0.0.1:0",
            "UNRELATED": "ignored",
        }
    )
    assert settings.jwks_file == JWKS
    assert settings.jwt_issuer == "https://kubernetes.default.svc, https://idp.example.com"
    assert settings.jwt_roles_claim == "realm_access.roles"
    assert settings.jwt_audience == "assay"
    assert settings.archive_addr == "archive:6000"
    assert settings.token_cost == 2
    assert settings.stuck_after == 120.0
    assert settings.lease_timeout == 45.0
    assert settings.sweep_max_fraction == 0.25
    assert settings.events_max_age == 86400.0
    assert settings.log_level == "DEBUG"
    assert settings.metrics_addr == "127.0.0.1:0"


def test_lease_defaults_to_three_heartbeats() -> None:
    settings = Settings.from_env({"ASSAY_HEARTBEAT_INTERVAL": "500ms"}, allow_missing_keys=True)
    assert settings.lease_timeout == pytest.approx(1.5)
    assert Settings(heartbeat_interval=2.0).lease_timeout == 6.0


def test_a_server_without_a_jwks_is_an_error() -> None:
    with pytest.raises(ConfigError, match="ASSAY_JWKS_FILE"):
        Settings.from_env({})
    assert Settings.from_env({"ASSAY_JWKS_URL": "https://idp/jwks"}).jwks_url == "https://idp/jwks"


def test_every_bad_variable_is_reported_at_once() -> None:
    env = {
        "ASSAY_HEARTBEAT_INTERVAL": "soon",
        "ASSAY_MAX_ATTEMPTS": "0",
        "ASSAY_TOKEN_COST": "one",
        "ASSAY_SWEEP_MAX_FRACTION": "2",
        "ASSAY_ARCHIVE_ADDR": "no-port",
        "ASSAY_LOG_LEVEL": "LOUD",
        "ASSAY_STUCK_AFTER": "-1s",
    }
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    expected = {*env, "ASSAY_JWKS_FILE"}
    assert set(caught.value.problems) == expected
    for var in expected:
        assert var in str(caught.value)


def test_listen_addr_binds_every_interface() -> None:
    assert listen_addr("127.0.0.1:50052") == "[::]:50052"
    assert listen_addr("[::1]:7") == "[::]:7"
    with pytest.raises(ConfigError):
        listen_addr("localhost")


@pytest.mark.parametrize(
    ("var", "raw"),
    [("ASSAY_JWT_ISSUER", " , "), ("ASSAY_JWT_AUDIENCE", ""), ("ASSAY_JWKS_REFRESH", "0")],
)
def test_token_settings_must_say_something(var: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=var):
        Settings.from_env({"ASSAY_JWKS_FILE": JWKS, var: raw})


@pytest.mark.parametrize(("raw", "ratio"), [("0", 0.0), ("0.1", 0.1), ("1", 1.0)])
def test_trace_sample_ratio_may_be_zero(raw: str, ratio: float) -> None:
    # 0: never begin a trace here, but record the traces callers began.
    env = {"ASSAY_JWKS_FILE": JWKS, "ASSAY_TRACE_SAMPLE_RATIO": raw}
    assert Settings.from_env(env).trace_sample_ratio == ratio


@pytest.mark.parametrize("raw", ["-0.1", "1.5", "nan", "some"])
def test_trace_sample_ratio_outside_zero_to_one_is_refused(raw: str) -> None:
    env = {"ASSAY_JWKS_FILE": JWKS, "ASSAY_TRACE_SAMPLE_RATIO": raw}
    with pytest.raises(ConfigError, match="ASSAY_TRACE_SAMPLE_RATIO"):
        Settings.from_env(env)


@pytest.mark.parametrize("raw", ["0", "nan"])
def test_sweep_max_fraction_must_be_above_zero(raw: str) -> None:
    env = {"ASSAY_JWKS_FILE": JWKS, "ASSAY_SWEEP_MAX_FRACTION": raw}
    with pytest.raises(ConfigError, match="ASSAY_SWEEP_MAX_FRACTION"):
        Settings.from_env(env)


def test_the_default_locale_is_indonesian_and_only_known_locales_are_accepted() -> None:
    assert Settings().default_locale == "id"
    english = Settings.from_env({"ASSAY_DEFAULT_LOCALE": "en"}, allow_missing_keys=True)
    assert english.default_locale == "en"
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"ASSAY_DEFAULT_LOCALE": "fr"}, allow_missing_keys=True)
    assert "ASSAY_DEFAULT_LOCALE" in caught.value.problems
