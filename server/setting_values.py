"""How each setting's text becomes a value: the parsers `load_config` uses, each
raising ConfigError with a message that names the variable (and its flag)."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable."""


# Who may create an account: anyone, holders of an invite from a server admin, no one.
REGISTRATION_MODES = ("open", "invite", "closed")


def origins(raw: str) -> tuple[str, ...]:
    out = []
    for item in raw.split(","):
        item = item.strip().rstrip("/").lower()
        if not item:
            continue
        if item == "*" or "://" not in item:
            raise ConfigError(
                f"ALLOWED_ORIGINS: {item!r} is not an origin like https://chat.example.com"
                " ('*' is not accepted)"
            )
        out.append(item)
    return tuple(out)


_VERSIONED = re.compile(r"^v?\d+:")


def cookie_secrets(raw: str) -> dict[int, str]:
    """Parse COOKIE_SECRET: one secret, or 'version:secret' pairs separated by commas."""
    raw = raw.strip()
    if not (_VERSIONED.match(raw) or "," in raw):
        secrets_by_version = {1: raw}
    else:
        secrets_by_version = {}
        for part in raw.split(","):
            version, sep, secret = part.strip().partition(":")
            version = version.removeprefix("v")
            if not sep or not version.isdigit() or not secret:
                raise ConfigError("COOKIE_SECRET: expected 'secret' or 'v1:secret,v2:secret'")
            secrets_by_version[int(version)] = secret
    for secret in secrets_by_version.values():
        if len(secret) < 16:
            raise ConfigError("COOKIE_SECRET: each secret needs at least 16 characters")
    return secrets_by_version


def embedded_secret(data_dir: Path) -> dict[int, str]:
    """Generate the embedded-mode cookie secret once and keep it, owner-readable only."""
    path = data_dir / "cookie_secret"
    data_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    os.chmod(path, 0o600)
    return {1: path.read_text().strip()}


def registration(raw: str | None) -> str:
    mode = (raw or "open").strip().lower()
    if mode not in REGISTRATION_MODES:
        raise ConfigError(f"CHAT_REGISTRATION (--registration): {raw!r} is not one of "
                          f"{', '.join(REGISTRATION_MODES)}")
    return mode


def number(raw: str | None, name: str) -> float:
    try:
        return float(raw or "0")
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a number") from None


def positive(raw: str | None, name: str) -> float:
    value = number(raw, name)
    if value <= 0:
        raise ConfigError(f"{name}: must be positive")
    return value


def seconds(raw: str | None, name: str, most: float) -> float:
    value = number(raw, name)
    if not 0 <= value <= most:  # also NaN
        raise ConfigError(f"{name}: must be between 0 and {most:g} seconds")
    return value


def whole(raw: str | None, name: str) -> int:
    try:
        value = int(raw or "0")
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a number") from None
    if value < 0:
        raise ConfigError(f"{name}: must not be negative")
    return value


def count(raw: str | None, name: str) -> int:
    """A quota: a whole number of at least 1."""
    value = whole(raw, name)
    if value < 1:
        raise ConfigError(f"{name}: must be at least 1")
    return value
