"""Who may take up a stored session: whoever holds its current resume token, with the key that made it.

A session's id names it (it travels in logs and URLs); its resume token proves ownership. The token
is a secret issued at start and replaced on every successful resume, so a token seen once stops
working as soon as its owner uses it. The store keeps only SHA-256 digests of the token and of the
API key that created the session: a copy of the database resumes nothing. The tokens are 256-bit
random, so a plain digest suffices (no slow password hash is needed against guessing).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from serve_app.store import StoredSession

TOKEN_BYTES = 32


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_digest(api_key: str | None) -> str | None:
    return None if api_key is None else digest(api_key)


def key_matches(stored: StoredSession, api_key: str | None) -> bool:
    """A session made without keys takes any accepted key; one made with a key, only that key."""
    if stored.owner_key_hash is None:
        return True
    return api_key is not None and hmac.compare_digest(stored.owner_key_hash, digest(api_key))
