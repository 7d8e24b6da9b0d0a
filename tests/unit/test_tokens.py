"""Tokens: the embedded instance secret, production without one, and the claims they carry."""

import time

import jwt
import pytest

from app.config import ConfigError, Settings
from app.security import Tokens

SECRET = "unit-tests-secret-0123456789abcdef-0123456789"


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
                "JWT_PUBLIC_KEY_FILE": str(tmp_path / "idp.pem"),
            }
        )
    )
    signed = jwt.encode(
        {"sub": "u1", "role": "student", "phone": "010-1111-2222", "exp": 4102444800},
        key,
        algorithm="RS256",
    )
    assert tokens.verify(signed).phone == "010-1111-2222"
    forged = jwt.encode({"sub": "u1", "role": "admin", "exp": 4102444800}, "guess" * 8, "HS256")
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
