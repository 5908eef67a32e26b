"""Claim tokens: a random secret handed out once; only its hash is stored."""

from __future__ import annotations

import hashlib
import secrets


def new_token() -> tuple[str, str]:
    """A fresh ``(token, token_hash)`` pair; the token has 256 bits of randomness."""
    token = "ct_" + secrets.token_urlsafe(32)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    # The token is a high-entropy random secret, so a plain SHA-256 cannot be
    # brute-forced; a slow password hash would only cost latency.
    return hashlib.sha256(token.encode()).hexdigest()
