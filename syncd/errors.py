"""Every error syncd raises on purpose derives from ``SyncdError``.

The tree (httpx style)::

    SyncdError                      base; ``code`` is a short machine-readable slug
    ├── ConfigError                 a config file or value is wrong (names file and key)
    ├── LogError                    a write request is refused by the log rules (SPEC §2);
    │   │                           carries the HTTP status Kolibri would answer
    │   ├── InvalidRecordError      400: a field is missing, of the wrong type or out of range
    │   ├── PermissionDeniedError   403
    │   └── NotFoundError           404
    ├── StoreError                  the store could not do what was asked
    │   └── StoreUnavailableError   a commit failed (disk full, I/O error): 503, retry later
    └── ProtocolError               a peer or a client broke the wire protocol
        ├── LocalProtocolError      we were about to send something invalid (a bug)
        └── RemoteProtocolError     the other side sent something invalid; ``status_hint``

Handlers translate a ``SyncdError`` into ``{"error": code, "detail": text}`` with
``status``; anything else is a bug and answers 500.
"""

from __future__ import annotations


class SyncdError(Exception):
    """Base class: ``code`` names the failure, ``detail`` explains it to a person."""

    code = "error"
    status = 500

    def __init__(self, detail: str = "", *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code


class ConfigError(SyncdError):
    """A configuration file or value is invalid; names the file and the key."""

    code = "config_error"
    status = 2

    def __init__(self, path: str, key: str, expected: str) -> None:
        super().__init__(f"{path}: {key}: {expected}")
        self.path = path
        self.key = key
        self.expected = expected


class LogError(SyncdError):
    """A write refused by the log rules; ``status`` is what Kolibri answers."""

    code = "invalid"
    status = 400


class InvalidRecordError(LogError):
    """400: ``field`` (dotted path, or ``non_field_errors``) is wrong."""

    code = "invalid"
    status = 400

    def __init__(self, field: str, detail: str, *, code: str | None = None) -> None:
        super().__init__(f"{field}: {detail}" if field else detail, code=code)
        self.field = field


class PermissionDeniedError(LogError):
    """403: the caller may not do this (anonymous quiz, submitted coach quiz, ...)."""

    code = "permission_denied"
    status = 403


class NotFoundError(LogError):
    """404: no such session (or not the caller's)."""

    code = "not_found"
    status = 404


class StoreError(SyncdError):
    """The store failed."""

    code = "store_error"
    status = 500


class StoreUnavailableError(StoreError):
    """A commit failed; nothing of the write was kept. Retry later (503)."""

    code = "unavailable"
    status = 503


class ProtocolError(SyncdError):
    """The wire protocol was broken."""

    code = "protocol_error"
    status = 400


class LocalProtocolError(ProtocolError):
    """We were about to send something invalid."""

    code = "local_protocol_error"


class RemoteProtocolError(ProtocolError):
    """The other side sent something invalid."""

    code = "remote_protocol_error"

    def __init__(self, detail: str, *, status_hint: int = 400) -> None:
        super().__init__(detail)
        self.status_hint = status_hint
        self.status = status_hint
