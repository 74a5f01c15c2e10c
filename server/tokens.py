"""Bearer secrets (API tokens, session ids) are kept only as their SHA-256: a leaked
database lets no one in."""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "chat_"  # noqa: S105 - a public marker, not a secret


def token_digest(token: str) -> str:
    """Tokens are stored only as their SHA-256: a leaked database reveals none."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh API token and its public id (shown in listings, useless to log in)."""
    secret = secrets.token_urlsafe(32)
    return f"{TOKEN_PREFIX}{secret}", f"{TOKEN_PREFIX}{secret[:8]}"
