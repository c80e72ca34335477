"""The domain errors every part of the twin raises; one place (``twin.http``) maps them to HTTP.

TwinError
 ├── BadInput        input that does not fit (wrong type, too long, malformed)
 │    ├── TooLarge   a body or a value over its size limit
 │    ├── Expired    a signed envelope past its expiry
 │    └── Misdirected  an envelope addressed to another twin
 ├── Unauthorized    no credentials, or credentials that are not valid
 ├── Forbidden       valid credentials without the scope the request needs
 ├── NotFound
 ├── Gone            a one-time link that was used or has expired
 ├── Conflict        the request clashes with what is stored
 ├── PreconditionFailed  a conditional write whose condition (If-Match, ...) does not hold
 ├── QuotaExceeded   a write that would take a store over its quota
 ├── VaultLocked     the root secret is sealed and the twin has not been unlocked
 ├── InUse           someone else holds it right now (a WebDAV lock, an upload under way)
 ├── InvalidSignature
 ├── WrongPassphrase
 ├── RateLimited
 ├── Unavailable     it cannot be done right now, but may be later (a peer's handler failed)
 └── PluginError     a capability or experience that cannot be loaded (manifest, dependencies)
"""

from __future__ import annotations


class TwinError(Exception):
    """Base of every error the twin raises on purpose; ``code`` is its stable machine name."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(TwinError):
    code = "bad_input"


class Invalid(BadInput):
    code = "invalid"


class TooLarge(BadInput):
    code = "too_large"


class Expired(BadInput):
    code = "expired"


class Misdirected(BadInput):
    code = "not_for_me"


class UnsupportedMedia(BadInput):
    code = "unsupported_media_type"


class Unauthorized(TwinError):
    code = "unauthorized"


class Forbidden(TwinError):
    code = "forbidden"


class NotFound(TwinError):
    code = "not_found"


class Gone(TwinError):
    code = "gone"


class Conflict(TwinError):
    code = "conflict"


class PreconditionFailed(TwinError):
    code = "precondition_failed"

    def __init__(self, message: str, current: str | None = None) -> None:
        super().__init__(message)
        self.current = current  # the current version (an ETag) where there is one


class QuotaExceeded(TwinError):
    code = "insufficient_storage"


class VaultLocked(TwinError):
    code = "locked"


class InUse(TwinError):
    """Someone else is changing the same thing right now (a WebDAV lock, an upload under way)."""

    code = "in_use"


class InvalidSignature(TwinError):
    code = "invalid_signature"


class WrongPassphrase(TwinError):
    code = "wrong_passphrase"


class RateLimited(TwinError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(TwinError):
    code = "unavailable"


class PluginError(TwinError):
    code = "plugin_error"
