"""Credentials in HTTP headers: the Bearer scheme, and comparing a shared secret."""

from __future__ import annotations

import hmac


def bearer_token(header: str) -> str | None:
    """The credentials of an `Authorization: Bearer ...` header, or None. The scheme's name is
    case-insensitive (RFC 6750, RFC 9110 11.1): `bearer` and `BEARER` are the same."""
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    return credentials if scheme.lower() == "bearer" and credentials else None


def same_secret(given: str | None, expected: str) -> bool:
    """Compare in constant time, so that the answer's timing does not tell how much matched."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
