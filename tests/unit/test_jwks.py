"""An identity provider's keys (JWT_JWKS_URL), against a JWKS server on this machine that rotates
its keys, goes down and hangs."""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from app.config import Settings
from app.jwks import FETCH_TIMEOUT_S, KeySet, Unreachable
from app.security import Tokens

IDP = "https://idp.example.com/realms/onlinestudy"


class Provider:
    """A JWKS endpoint: publishes some of its keys, counts the fetches, and can fail or hang."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.published: list[str] = []
        self.fetches = 0
        self.answered = 0
        self.mode = "up"  # "down": 500; "hang": wait for `release`
        self.release = threading.Event()
        self.slow_s = 0.0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                provider.fetches += 1
                if provider.mode == "hang":
                    provider.release.wait(10)
                time.sleep(provider.slow_s)
                if provider.mode == "down":
                    self.send_error(500)
                else:
                    body = json.dumps({"keys": [provider.jwk(k) for k in provider.published]})
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(body.encode())
                provider.answered += 1

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def rotate(self) -> str:
        """A new key, published beside the old ones; returns its kid."""
        kid = uuid.uuid4().hex
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.published.append(kid)
        return kid

    def jwk(self, kid: str) -> dict:
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key(), as_dict=True)
        return {**public, "kid": kid, "use": "sig", "alg": "RS256"}

    def token(self, kid: str, **claims: object) -> str:
        now = int(time.time())
        body = {"sub": "u1", "role": "admin", "iss": IDP, "iat": now, "exp": now + 300, **claims}
        key = self.keys.get(kid) or next(iter(self.keys.values()))
        return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def provider():
    idp = Provider()
    yield idp
    idp.release.set()
    idp.server.shutdown()


def key_of(keys: KeySet, token: str) -> str | None:
    return keys.get_signing_key_from_jwt(token).key_id


def test_tokens_of_the_identity_provider_verify_with_its_published_keys(provider):
    kid = provider.rotate()
    tokens = Tokens(
        Settings.from_env(
            {
                "CELERY_BROKER_URL": "redis://x",
                "JWT_ALGORITHM": "RS256",
                "JWT_JWKS_URL": provider.url,
                "JWT_ISSUER": IDP,
                "JWT_AUDIENCE": "onlinestudy-api",
            }
        )
    )
    for _ in range(5):
        assert tokens.verify(provider.token(kid, aud="onlinestudy-api")).role == "admin"
    assert provider.fetches == 1  # cached
    with pytest.raises(jwt.InvalidAudienceError):
        tokens.verify(provider.token(kid, aud="another-api"))


def test_a_rotated_key_is_fetched_once_when_a_token_names_it(provider):
    first = provider.rotate()
    keys = KeySet(provider.url, ttl_s=300, refetch_interval_s=0.2)
    assert key_of(keys, provider.token(first)) == first
    second = provider.rotate()
    time.sleep(0.3)  # the provider rotated a while after our last fetch

    assert key_of(keys, provider.token(second)) == second
    assert key_of(keys, provider.token(first)) == first
    assert provider.fetches == 2


def test_unknown_key_ids_refetch_at_most_once_per_interval(provider):
    kid = provider.rotate()
    keys = KeySet(provider.url, ttl_s=300, refetch_interval_s=0.5)
    key_of(keys, provider.token(kid))
    time.sleep(0.6)
    for _ in range(50):
        with pytest.raises(jwt.PyJWKClientError):
            key_of(keys, provider.token(uuid.uuid4().hex))
    assert provider.fetches == 2  # the first unknown kid fetched again; the 49 others did not


def test_concurrent_requests_on_a_cold_cache_fetch_the_keys_once(provider):
    kid = provider.rotate()
    provider.slow_s = 0.3
    keys = KeySet(provider.url, ttl_s=300)
    token = provider.token(kid)
    with ThreadPoolExecutor(16) as pool:
        found = list(pool.map(lambda _: key_of(keys, token), range(16)))
    assert found == [kid] * 16
    assert provider.fetches == 1


def test_a_provider_that_hangs_is_given_up_on_after_a_short_timeout(provider):
    kid = provider.rotate()
    provider.mode = "hang"  # answers only when released (10 s at most)
    keys = KeySet(provider.url, ttl_s=300)
    with pytest.raises(Unreachable):
        key_of(keys, provider.token(kid))
    # We gave up while the provider was still holding the request.
    assert provider.fetches == 1 and provider.answered == 0
    assert keys.timeout == FETCH_TIMEOUT_S <= 2


def test_during_an_outage_the_last_good_keys_serve_and_the_provider_is_asked_once(provider):
    kid = provider.rotate()
    keys = KeySet(provider.url, ttl_s=0.1, refetch_interval_s=60)
    token = provider.token(kid)
    assert key_of(keys, token) == kid
    provider.mode = "down"
    time.sleep(0.2)  # the cached set expired

    for _ in range(20):
        assert key_of(keys, token) == kid
    assert provider.fetches == 2  # one failed attempt, then the last good set


def test_a_provider_down_from_the_start_is_not_asked_by_every_request(provider):
    kid = provider.rotate()
    provider.mode = "down"
    keys = KeySet(provider.url, ttl_s=300, refetch_interval_s=60)
    for _ in range(20):
        with pytest.raises(Unreachable):
            key_of(keys, provider.token(kid))
    assert provider.fetches == 1
