"""The local HTTP API on a Unix socket (DESIGN §8)."""

from syncd.api.app import make_app

__all__ = ["make_app"]
