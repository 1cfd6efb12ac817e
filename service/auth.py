"""API keys: who is calling, and whether they may touch a job.

Keys are compared in constant time: the presented token and every configured key are
hashed (SHA-256, so each comparison has the same length) and the token's digest is
compared against all of them, with no early exit that would tell which one matched.
A caller is known by the key's fingerprint (the first 16 hex digits of its SHA-256),
which is safe to store: jobs record it as their owner in `job.meta["owner"]`.
"""

import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache

ANONYMOUS = "anonymous"  # the one owner when no keys are configured (auth off)
FINGERPRINT_HEX_DIGITS = 16


@dataclass(frozen=True)
class Caller:
    """Who sent a request: `owner` is a key fingerprint, or ANONYMOUS when the API runs without keys."""

    owner: str
    authenticated: bool  # False with auth off: every caller is the same anonymous owner, nothing is checked

    def may_access(self, job_owner: str | None) -> bool:
        """A job is its owner's alone; with auth off, everyone's."""
        return not self.authenticated or job_owner == self.owner


OPEN_ACCESS = Caller(ANONYMOUS, authenticated=False)


def fingerprint(key: str) -> str:
    """The non-secret name of an API key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:FINGERPRINT_HEX_DIGITS]


@lru_cache(maxsize=16)
def _key_digests(keys: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(hashlib.sha256(key.encode()).digest() for key in keys)


def authenticate(token: str | None, keys: tuple[str, ...]) -> Caller | None:
    """The caller presenting bearer `token`, or None when it matches none of `keys` (which is non-empty).

    Every key is compared (constant time each), whichever matches, so the time taken does not
    depend on which key, if any, the token equals.
    """
    presented = hashlib.sha256((token or "").encode()).digest()
    matched: bytes | None = None
    for digest in _key_digests(keys):
        if hmac.compare_digest(presented, digest):
            matched = digest
    if matched is None:
        return None
    return Caller(matched.hex()[:FINGERPRINT_HEX_DIGITS], authenticated=True)
