"""Who is calling (Bearer JWT), what they may do (roles, ownership), and abuse limits.

Roles: `admin` (everything), `manager` (their learnings and evaluations, and those orders),
`student` (orders, SMS and My page of their own phone). Another person's resource answers 404,
so that its existence is not revealed; a request the role may never make answers 403.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import jwt
import structlog
from flask import Flask, Response, g, request
from flask_cors import CORS
from flask_limiter import Limiter, RequestLimit
from flask_limiter.util import get_remote_address
from flask_smorest import abort
from limits import parse
from sqlalchemy.orm import Session

from app.config import DATABASE_STORAGE, ConfigError, Settings, describe_duration
from app.jwks import REFETCH_INTERVAL_S, KeySet
from app.shared.credentials import bearer_token
from app.shared.phone import normalize_mobile
from app.shared.rate_limits import DatabaseStorage

ROLES = ("admin", "manager", "student")
LEEWAY_S = 30  # clock skew allowed on exp
# No token needed: probes, metrics (their own token, if set) and the API's description.
PUBLIC_PREFIXES = ("/health/", "/metrics", "/openapi.json", "/docs")

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Principal:
    subject: str
    role: str
    phone: str | None = None
    manager_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


MAX_MANAGER_ID = 2**31 - 1  # the id column is an INTEGER
MAX_SUBJECT_LENGTH = 255  # OpenID Connect's bound on `sub`


def principal_from(claims: Mapping[str, Any]) -> Principal:
    """The caller that verified claims name, or jwt.InvalidTokenError unless they name one
    exactly: a known role and a subject; for a manager, a positive integer id (not a bool,
    not 0: a scope that could read as "none" would widen it); for a student, a Korean mobile
    number (normalized, as the phones it is compared with are)."""
    role, subject = claims.get("role"), claims.get("sub")
    if role not in ROLES:
        raise jwt.InvalidTokenError("unknown role")
    if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_LENGTH:
        raise jwt.InvalidTokenError(f"sub must be 1 to {MAX_SUBJECT_LENGTH} characters")
    if role == "manager":
        manager_id = claims.get("manager_id")
        if type(manager_id) is not int or not 0 < manager_id <= MAX_MANAGER_ID:
            raise jwt.InvalidTokenError("a manager token names a manager_id, a positive integer")
        return Principal(subject, role, manager_id=manager_id)
    if role == "student":
        phone = claims.get("phone")
        try:
            if not isinstance(phone, str):
                raise ValueError
            return Principal(subject, role, phone=normalize_mobile(phone))
        except ValueError:
            raise jwt.InvalidTokenError(
                "a student token names a phone, a Korean mobile number"
            ) from None
    return Principal(subject, role)


# --- tokens -------------------------------------------------------------------------------


def instance_secret(var_dir: Path) -> str:
    """The embedded default's secret: made once, kept in the instance folder (mode 600)."""
    path = var_dir / "jwt-secret"
    var_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


class Tokens:
    """Verifies tokens (HS256 with JWT_SECRET, or RS256 with a public key or a JWKS URL) and,
    with a secret, issues them. Every token names JWT_ISSUER as `iss`, one of JWT_AUDIENCE as
    `aud` when that is set (and none when it is not: a token meant for another service does
    not open this one), and expires within JWT_MAX_TTL."""

    def __init__(self, settings: Settings):
        self.algorithm = settings.jwt_algorithm
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.max_ttl_s = settings.jwt_max_ttl_s
        self._verified: dict[str, tuple[Principal, float]] = {}
        self._jwks: KeySet | None = None
        self._secret = None
        self._public_key = settings.jwt_public_key
        if self.algorithm == "HS256":
            self._secret = settings.jwt_secret or (
                instance_secret(settings.var_dir) if settings.embedded else None
            )
            if not self._secret:
                raise ConfigError(
                    "JWT_SECRET (or JWT_SECRET_FILE) is required outside the "
                    "embedded mode; there is no default secret"
                )
            if len(self._secret) < 32:
                raise ConfigError("JWT_SECRET must be at least 32 characters")
        elif settings.jwt_jwks_url:
            self._jwks = KeySet(settings.jwt_jwks_url, settings.jwt_jwks_ttl_s)
        elif not self._public_key:
            raise ConfigError("JWT_ALGORITHM=RS256 needs JWT_PUBLIC_KEY(_FILE) or JWT_JWKS_URL")

    def issue(
        self,
        role: str,
        phone: str | None = None,
        manager_id: int | None = None,
        ttl_s: int = 3600,
        subject: str | None = None,
    ) -> str:
        if self._secret is None:
            raise ConfigError("tokens are issued by your identity provider (RS256)")
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if ttl_s > self.max_ttl_s:
            raise ValueError(
                f"a token may live at most JWT_MAX_TTL ({describe_duration(self.max_ttl_s)})"
            )
        now = int(time.time())
        claims: dict[str, str | int] = {
            "sub": subject or f"{role}:{phone or manager_id or 'cli'}",
            "role": role,
            "iss": self.issuer,
            "iat": now,
            "exp": now + ttl_s,
        }
        if self.audience:
            claims["aud"] = self.audience[0]
        if phone:
            claims["phone"] = phone
        if manager_id is not None:
            claims["manager_id"] = manager_id
        try:
            principal_from(claims)  # never mint a token that verify() would refuse
        except jwt.InvalidTokenError as exc:
            raise ValueError(str(exc)) from None
        return jwt.encode(claims, self._secret, algorithm="HS256")

    # Verified tokens, so that a client's every request does not check the signature again;
    # an entry is used only until its token expires.
    CACHE_SIZE = 4096

    def verify(self, token: str) -> Principal:
        """The caller, or jwt.InvalidTokenError."""
        cache = self._verified
        hit = cache.get(token)
        if hit is not None and time.time() < hit[1]:
            return hit[0]
        principal, expires = self._verify(token)
        if len(cache) >= self.CACHE_SIZE:
            cache.clear()
        cache[token] = (principal, expires)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        if self._jwks is not None:
            key = self._jwks.get_signing_key_from_jwt(token).key
        else:
            key = self._secret or self._public_key
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[self.algorithm],
                options={"require": ["exp", "sub", "role", "iss"]},
                issuer=self.issuer,
                audience=list(self.audience) or None,
                leeway=LEEWAY_S,
            )
        except jwt.InvalidAudienceError:
            if self.audience:
                raise
            raise jwt.InvalidAudienceError(
                "the token names an audience (aud) and none is configured (JWT_AUDIENCE)"
            ) from None
        self._check_lifetime(claims)
        return principal_from(claims), float(claims["exp"]) + LEEWAY_S

    def _check_lifetime(self, claims: dict[str, object]) -> None:
        """A token that lives longer than JWT_MAX_TTL is refused, however it was signed: a
        leaked one must not open the API for years."""
        expires = cast(float, claims["exp"])  # decode() checked that it is a number
        issued = claims.get("iat")
        lifetime = max(
            expires - time.time() - LEEWAY_S,
            expires - issued if isinstance(issued, int | float) else 0,
        )
        if lifetime > self.max_ttl_s:
            raise jwt.InvalidTokenError(
                f"the token lives longer than {describe_duration(self.max_ttl_s)} (JWT_MAX_TTL)"
            )


# --- per request --------------------------------------------------------------------------


def current() -> Principal:
    principal: Principal = g.principal
    return principal


def require_role(*roles: str) -> Principal:
    """403 unless the caller has one of `roles` (admins always pass)."""
    principal = current()
    if not principal.is_admin and principal.role not in roles:
        abort(403, message=f"a {principal.role} may not do this")
    return principal


def ensure_visible(visible: bool, what: str) -> None:
    """404 for what the caller may not see: the same answer as for what does not exist."""
    if not visible:
        abort(404, message=f"{what} not found")


def student_phone() -> str | None:
    """The phone a student's reads are confined to. None, no confinement, only for an admin:
    any other caller without a phone is refused, so that a missing scope never widens one."""
    principal = current()
    if principal.is_admin:
        return None
    if principal.role == "student" and principal.phone:
        return principal.phone
    abort(403, message=f"a {principal.role} may not do this")


def manager_scope() -> int | None:
    """The manager id a manager's reads are confined to. None, no confinement, only for an
    admin: any other caller without a manager id is refused (fails closed, as above)."""
    principal = current()
    if principal.is_admin:
        return None
    if principal.role == "manager" and principal.manager_id:
        return principal.manager_id
    abort(403, message=f"a {principal.role} may not do this")


def client_key() -> str:
    """Rate limits count per caller: the token's subject, else the address."""
    principal = g.get("principal")
    return f"sub:{principal.subject}" if principal else f"ip:{get_remote_address()}"


def _has_token() -> bool:
    return g.get("principal") is not None


def _seconds_until(reset_at: Callable[[], float], window_s: int) -> int:
    """Seconds until a breached limit's window ends (a Retry-After); the window's whole
    length if the store cannot say."""
    try:
        return max(1, int(reset_at() - time.time()))
    except Exception:  # noqa: BLE001 - the store went away since the hit: a safe upper bound
        return window_s


class CallerLimit:
    """A limit per caller that a view counts at the moment it decides to (admins are exempt):
    the orders route counts an order when it would write one, so a sold-out answer, a replay
    or refused input costs no count. It counts in flask-limiter's store, by its strategy."""

    def __init__(self, limiter: Limiter, limit: str, scope: str):
        self._limiter = limiter
        self._item = parse(limit)
        self._scope = scope

    def count(self) -> None:
        """One more for the caller; over the limit, 429 with Retry-After (flask-smorest's body)."""
        principal = g.get("principal")
        if principal is None or principal.is_admin:
            return
        key, strategy = client_key(), self._limiter.limiter
        try:
            if strategy.hit(self._item, key, self._scope):
                return
        except Exception:  # noqa: BLE001 - as RATELIMIT_SWALLOW_ERRORS: no store, no limit
            log.warning("rate_limit.store_failed", scope=self._scope, exc_info=True)
            return
        retry_after = _seconds_until(
            lambda: strategy.get_window_stats(self._item, key, self._scope).reset_time,
            self._item.get_expiry(),
        )
        abort(
            429,
            message=f"too many {self._scope}: {self._item}",
            headers={"Retry-After": str(retry_after)},
        )


@dataclass(frozen=True)
class Limits:
    """The per-caller limits the order routes count themselves."""

    orders: CallerLimit
    cancels: CallerLimit


def _seconds_to_reset(limit: RequestLimit | None) -> int:
    """Until the window of flask-limiter's breached limit ends."""
    if limit is None:
        return 60
    return _seconds_until(lambda: limit.reset_at, limit.limit.get_expiry())


def install(
    app: Flask, settings: Settings, tokens: Tokens, main_session: Callable[[], Session]
) -> Limits:
    """Authentication, rate limits, CORS and security headers on every request; returns the
    limits that the order routes add."""
    # Every API process must count in the same place, or each gunicorn worker lets the whole
    # limit through: Redis, or the main database where there is no Redis.
    if settings.rate_limit_storage_url == DATABASE_STORAGE:
        storage_uri = DatabaseStorage.URI
        # flask-limiter passes its options on to the storage's constructor as they are.
        storage_options = cast(dict[str, str | int], {"session": main_session})
    else:
        storage_uri, storage_options = settings.rate_limit_storage_url, {}
    app.config.update(
        RATELIMIT_HEADERS_ENABLED=False,
        RATELIMIT_SWALLOW_ERRORS=True,  # the limit store down must not take the API down
    )

    # Three steps in this order: read the token (so the limiter knows the caller), count a
    # token-less request against its address's limit (flask-limiter's own hook), then refuse
    # it if unauthenticated. Orders and cancels count later, in their views (CallerLimit).
    @app.before_request
    def _identify() -> None:
        g.principal, g.auth_error = None, None
        if request.path.startswith(PUBLIC_PREFIXES) or request.method == "OPTIONS":
            return
        token = bearer_token(request.headers.get("Authorization", ""))
        if token is None:
            g.auth_error = (401, "a Bearer token is required", 'Bearer realm="onlinestudy"')
            return
        try:
            g.principal = tokens.verify(token)
        except jwt.PyJWKClientConnectionError as exc:
            # Not the caller's fault: the identity provider's keys cannot be had just now.
            g.auth_error = (503, str(exc), str(int(REFETCH_INTERVAL_S)))
        except jwt.PyJWTError as exc:
            g.auth_error = (401, f"invalid token: {exc}", 'Bearer error="invalid_token"')

    # Requests without a token count against one limit per address, whatever the route (an
    # application limit: a default limit would count each route apart). No X-RateLimit-*
    # headers on every answer: flask-limiter would read the window back from the store for
    # them, a second round trip per limited request. A refused request still learns when to
    # come back (`_retry_after`).
    limiter = Limiter(
        key_func=client_key,
        headers_enabled=False,
        strategy="fixed-window",
        application_limits=[settings.rate_limit_anonymous],
        storage_uri=storage_uri,
        storage_options=storage_options,
    )
    limiter.init_app(app)

    @app.before_request
    def _authenticate() -> None:
        if g.get("auth_error"):
            status, message, header = g.auth_error
            name = "WWW-Authenticate" if status == 401 else "Retry-After"
            abort(status, message=message, headers={name: header})

    # flask-limiter counts only the token-less: a caller with a token meets the limits its
    # routes count themselves (CallerLimit), so its requests skip the extension's limit
    # resolution, a tenth of a cheap answer's CPU.
    @limiter.request_filter
    def _probes_and_callers_pass() -> bool:
        return _has_token() or request.path.startswith(PUBLIC_PREFIXES)

    @app.after_request
    def _retry_after(response: Response) -> Response:
        # SPEC: a 429 says when to try again: when the breached limit's window ends.
        if response.status_code == 429 and "Retry-After" not in response.headers:
            response.headers["Retry-After"] = str(_seconds_to_reset(limiter.current_limit))
        return response

    if settings.cors_origins:
        CORS(
            app,
            origins=list(settings.cors_origins),
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
            expose_headers=["X-Pagination", "X-Request-ID", "Retry-After"],
        )

    @app.after_request
    def _security_headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        # /docs sets its own, wider one (app/docs.py).
        response.headers.setdefault(
            "Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"
        )
        if settings.hsts:
            response.headers.setdefault(
                "Strict-Transport-Security", "max-age=31536000; includeSubDomains"
            )
        return response

    return Limits(
        orders=CallerLimit(limiter, settings.rate_limit_orders, "orders"),
        cancels=CallerLimit(limiter, settings.rate_limit_cancels, "cancels"),
    )
