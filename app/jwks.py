"""An identity provider's signing keys, from its JWKS URL (JWT_JWKS_URL).

PyJWT's PyJWKClient fetches and caches them: one fetch at a time under its lock, the key set
kept for JWT_JWKS_TTL, and a token whose `kid` is not in the set (the provider rotated its
keys) fetches the set again, at most once per REFETCH_INTERVAL_S. Configured here: a short
timeout, because a fetch happens inside a request (PyJWT waits 30 s by default). Added here:
when the provider cannot be reached, the last good key set goes on serving and the provider is
asked again only once per interval, so that its outage neither locks every caller out nor puts
a timeout in every request.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import structlog

FETCH_TIMEOUT_S = 2.0
REFETCH_INTERVAL_S = 10.0

log = structlog.get_logger(__name__)


class Unreachable(jwt.PyJWKClientConnectionError):
    """No key set can be had: the provider does not answer and none was fetched before."""


class KeySet(jwt.PyJWKClient):
    def __init__(
        self,
        url: str,
        ttl_s: float,
        timeout_s: float = FETCH_TIMEOUT_S,
        refetch_interval_s: float = REFETCH_INTERVAL_S,
    ):
        super().__init__(
            url,
            cache_keys=False,  # PyJWT's per-kid cache never expires: a revoked key would stay
            cache_jwk_set=True,
            lifespan=ttl_s,
            timeout=timeout_s,
            cooldown_duration=refetch_interval_s,
        )
        self._last_good: Any = None
        self._next_attempt = 0.0

    def fetch_data(self) -> Any:
        # Called under the client's lock, when the cached set expired or a kid is unknown.
        now = time.monotonic()
        if now < self._next_attempt:
            return self._fallback()
        try:
            data = super().fetch_data()
        except jwt.PyJWKClientError as exc:
            self._next_attempt = now + self.cooldown_duration
            log.warning("jwks_fetch_failed", url=self.uri, error=str(exc))
            return self._fallback()
        self._last_good = data
        return data

    def _fallback(self) -> Any:
        if self._last_good is None:
            raise Unreachable(f"the identity provider's keys ({self.uri}) cannot be fetched")
        return self._last_good
