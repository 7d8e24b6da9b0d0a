"""Tokens: the embedded instance secret, production without one, the claims they carry, and
the scopes they confine a caller to."""

import time
from pathlib import Path

import jwt
import pytest
from flask import Flask, g
from werkzeug.exceptions import HTTPException

from app import security
from app.config import ConfigError, Settings
from app.security import Principal, Tokens

SECRET = "unit-tests-secret-0123456789abcdef-0123456789"
IDP = "https://idp.example.com/realms/onlinestudy"


def test_the_embedded_default_makes_its_secret_once_and_keeps_it(tmp_path):
    settings = Settings.from_env({"ONLINESTUDY_VAR_DIR": str(tmp_path)})
    token = Tokens(settings).issue("admin")
    assert Tokens(Settings.from_env({"ONLINESTUDY_VAR_DIR": str(tmp_path)})).verify(token)
    secret_file = tmp_path / "jwt-secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600


def test_production_settings_without_a_secret_refuse_to_start():
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        Tokens(Settings.from_env({"CELERY_BROKER_URL": "redis://localhost:6379/0"}))
    with pytest.raises(ConfigError, match="at least 32"):
        Tokens(Settings.from_env({"CELERY_BROKER_URL": "redis://x", "JWT_SECRET": "short"}))


def test_a_secret_can_come_from_a_mounted_file(tmp_path):
    (tmp_path / "secret").write_text(SECRET + "\n")
    settings = Settings.from_env(
        {"CELERY_BROKER_URL": "redis://x", "JWT_SECRET_FILE": str(tmp_path / "secret")}
    )
    assert settings.jwt_secret == SECRET
    assert SECRET not in repr(settings)


def test_tokens_carry_the_role_and_what_it_is_confined_to():
    tokens = Tokens(Settings.from_env({"CELERY_BROKER_URL": "redis://x", "JWT_SECRET": SECRET}))
    student = tokens.verify(tokens.issue("student", phone="010-1234-5678"))
    manager = tokens.verify(tokens.issue("manager", manager_id=7))
    assert (student.role, student.phone) == ("student", "010-1234-5678")
    assert (manager.role, manager.manager_id) == ("manager", 7)
    with pytest.raises(jwt.ExpiredSignatureError):
        tokens.verify(tokens.issue("admin", ttl_s=-120))


def test_rs256_verifies_with_the_identity_providers_public_key(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "idp.pem").write_bytes(public)
    tokens = Tokens(
        Settings.from_env(
            {
                "CELERY_BROKER_URL": "redis://x",
                "JWT_ALGORITHM": "RS256",
                "JWT_ISSUER": IDP,
                "JWT_PUBLIC_KEY_FILE": str(tmp_path / "idp.pem"),
            }
        )
    )
    exp = int(time.time()) + 300
    signed = jwt.encode(
        {"sub": "u1", "role": "student", "phone": "010-1111-2222", "exp": exp, "iss": IDP},
        key,
        algorithm="RS256",
    )
    assert tokens.verify(signed).phone == "010-1111-2222"
    forged = jwt.encode(
        {"sub": "u1", "role": "admin", "exp": exp, "iss": IDP}, "guess" * 8, "HS256"
    )
    with pytest.raises(jwt.InvalidTokenError):
        tokens.verify(forged)
    with pytest.raises(ConfigError):
        tokens.issue("admin")


@pytest.mark.speed
def test_a_verified_token_is_trusted_from_memory_only_until_it_expires(monkeypatch):
    tokens = Tokens(Settings.from_env({"CELERY_BROKER_URL": "redis://x", "JWT_SECRET": SECRET}))
    token = tokens.issue("student", phone="010-1234-5678", ttl_s=60)
    checks = []
    real = tokens._verify
    monkeypatch.setattr(tokens, "_verify", lambda t: checks.append(t) or real(t))

    first, again = tokens.verify(token), tokens.verify(token)
    assert first == again and len(checks) == 1

    later = time.time() + 60 + 31  # past exp and the clock-skew leeway
    monkeypatch.setattr("app.security.time.time", lambda: later)
    tokens.verify(token)  # not from memory any more: the signature and exp are checked again
    assert len(checks) == 2


@pytest.mark.parametrize(
    "claims",
    [
        {"role": "manager", "manager_id": 0},
        {"role": "manager", "manager_id": True},
        {"role": "manager", "manager_id": -3},
        {"role": "manager", "manager_id": "7"},
        {"role": "manager", "manager_id": 7.0},
        {"role": "manager", "manager_id": 2**31},
        {"role": "manager"},
        {"role": "student", "phone": "12345"},
        {"role": "student", "phone": ""},
        {"role": "student", "phone": ["010-1234-5678"]},
        {"role": "student", "phone": "02-312-3456"},  # a landline
        {"role": "admin", "sub": "x" * 256},
        {"role": "admin", "sub": ""},
        {"role": ["admin"]},
    ],
)
def test_a_token_whose_claims_name_no_one_exactly_is_refused(claims):
    with pytest.raises(jwt.InvalidTokenError):
        hs256().verify(signed({"iss": "onlinestudy", **claims}))


def test_a_students_phone_claim_is_normalized_as_the_phones_it_is_compared_with():
    student = hs256().verify(
        signed({"iss": "onlinestudy", "role": "student", "phone": "+82 10-1234-5678"})
    )
    assert student.phone == "010-1234-5678"


@pytest.mark.parametrize(
    "claims",
    [{"manager_id": 0}, {"manager_id": True}, {"manager_id": -1}, {}],
)
def test_no_token_is_minted_that_verify_would_refuse(claims):
    with pytest.raises(ValueError, match="manager_id"):
        hs256().issue("manager", **claims)
    with pytest.raises(ValueError, match="phone"):
        hs256().issue("student", phone="not a phone")


def test_the_token_command_refuses_a_manager_id_of_zero():
    from click.testing import CliRunner

    from app.cli import main

    env = {"CELERY_BROKER_URL": "redis://x", "JWT_SECRET": SECRET}
    refused = CliRunner().invoke(main, ["token", "--role", "manager", "--manager-id", "0"], env=env)
    assert refused.exit_code == 2 and "manager_id" in refused.output
    minted = CliRunner().invoke(main, ["token", "--role", "manager", "--manager-id", "3"], env=env)
    assert minted.exit_code == 0, minted.output


@pytest.mark.parametrize(
    "principal, scope",
    [
        (Principal("a", "admin"), "student_phone"),
        (Principal("a", "admin"), "manager_scope"),
        (Principal("s", "student", phone="010-1234-5678"), "student_phone"),
        (Principal("m", "manager", manager_id=4), "manager_scope"),
    ],
)
def test_a_scope_is_the_callers_own_and_none_only_for_an_admin(principal, scope):
    with Flask(__name__).test_request_context():
        g.principal = principal
        confined = getattr(security, scope)()
    expected = {"student_phone": principal.phone, "manager_scope": principal.manager_id}[scope]
    assert confined == expected and (confined is None) == principal.is_admin


@pytest.mark.parametrize(
    "principal, scope",
    [
        (Principal("m", "manager", manager_id=4), "student_phone"),
        (Principal("s", "student", phone="010-1234-5678"), "manager_scope"),
        (Principal("s", "student"), "student_phone"),  # no phone: never "everyone's"
        (Principal("m", "manager", manager_id=0), "manager_scope"),
        (Principal("m", "manager"), "manager_scope"),
        (Principal("x", "auditor"), "student_phone"),
        (Principal("x", "auditor"), "manager_scope"),
    ],
)
def test_a_scope_fails_closed_for_anyone_it_cannot_confine(principal, scope):
    with Flask(__name__).test_request_context():
        g.principal = principal
        with pytest.raises(HTTPException) as refused:
            getattr(security, scope)()
    assert refused.value.code == 403


# --- a real identity provider's tokens: issuer, audience, lifetime --------------------------


def hs256(env: dict[str, str] | None = None) -> Tokens:
    return Tokens(
        Settings.from_env({"CELERY_BROKER_URL": "redis://x", "JWT_SECRET": SECRET, **(env or {})})
    )


def signed(claims: dict, lives_s: int = 300) -> str:
    now = int(time.time())
    return jwt.encode(
        {"sub": "u1", "role": "admin", "iat": now, "exp": now + lives_s, **claims},
        SECRET,
        algorithm="HS256",
    )


def test_the_issuer_is_checked_and_tokens_of_another_issuer_are_refused():
    tokens = hs256()
    assert tokens.verify(tokens.issue("admin")).role == "admin"  # iss "onlinestudy"
    for claims in ({}, {"iss": "https://evil.example"}, {"iss": "onlinestudy "}):
        with pytest.raises(jwt.InvalidTokenError):
            tokens.verify(signed(claims))

    idp = hs256({"JWT_ISSUER": IDP})
    assert idp.verify(signed({"iss": IDP})).subject == "u1"
    assert idp.verify(idp.issue("admin")).role == "admin"  # `onlinestudy token` follows it
    with pytest.raises(jwt.InvalidIssuerError):
        idp.verify(signed({"iss": "onlinestudy"}))


def test_a_token_naming_an_audience_is_accepted_when_the_audience_is_ours():
    tokens = hs256({"JWT_ISSUER": IDP, "JWT_AUDIENCE": "onlinestudy-api, account"})
    for audience in ("onlinestudy-api", ["account", "other"], "account"):
        assert tokens.verify(signed({"iss": IDP, "aud": audience})).subject == "u1"
    assert tokens.verify(tokens.issue("admin")).role == "admin"
    for claims in ({"iss": IDP}, {"iss": IDP, "aud": "another-api"}):
        with pytest.raises(jwt.InvalidTokenError):
            tokens.verify(signed(claims))


def test_without_a_configured_audience_a_token_meant_for_another_service_is_refused():
    with pytest.raises(jwt.InvalidAudienceError, match="JWT_AUDIENCE"):
        hs256().verify(signed({"iss": "onlinestudy", "aud": "billing-api"}))


def test_an_identity_provider_without_a_configured_issuer_stops_the_start():
    with pytest.raises(ConfigError, match="JWT_ISSUER"):
        Settings.from_env({"JWT_ALGORITHM": "RS256", "JWT_JWKS_URL": "https://idp/jwks"})


def test_a_token_that_lives_longer_than_jwt_max_ttl_is_refused():
    tokens = hs256()  # JWT_MAX_TTL: one day
    century = 100 * 365 * 86400
    with pytest.raises(jwt.InvalidTokenError, match="JWT_MAX_TTL"):
        tokens.verify(signed({"iss": "onlinestudy"}, lives_s=century))
    now = int(time.time())
    no_iat = jwt.encode(
        {"sub": "u", "role": "admin", "iss": "onlinestudy", "exp": now + century}, SECRET
    )
    with pytest.raises(jwt.InvalidTokenError, match="JWT_MAX_TTL"):
        tokens.verify(no_iat)
    # Issued ten days ago for eleven: one day left, but it was made to live too long.
    old = jwt.encode(
        {
            "sub": "u",
            "role": "admin",
            "iss": "onlinestudy",
            "iat": now - 10 * 86400,
            "exp": now + 86400 - 60,
        },
        SECRET,
    )
    with pytest.raises(jwt.InvalidTokenError, match="JWT_MAX_TTL"):
        tokens.verify(old)
    assert tokens.verify(signed({"iss": "onlinestudy"}, lives_s=86400)).role == "admin"

    short = hs256({"JWT_MAX_TTL": "30m"})
    with pytest.raises(jwt.InvalidTokenError, match="30 minutes"):
        short.verify(signed({"iss": "onlinestudy"}, lives_s=3600))
    with pytest.raises(ValueError, match="JWT_MAX_TTL"):
        short.issue("admin", ttl_s=3600)


def test_the_placeholder_secrets_of_the_examples_stop_the_start(tmp_path):
    lines = (Path(__file__).parents[2] / ".env.example").read_text().splitlines()
    example = dict(line.split("=", 1) for line in lines if "=" in line and line[0] != "#")
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        Settings.from_env({"JWT_SECRET": example["JWT_SECRET"]})
    with pytest.raises(ConfigError, match="METRICS_TOKEN"):
        Settings.from_env({"METRICS_TOKEN": example["METRICS_TOKEN"]})
    (tmp_path / "secret").write_text("change-me-to-a-random-secret-of-at-least-32-chars\n")
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        Settings.from_env({"JWT_SECRET_FILE": str(tmp_path / "secret")})
