"""The store's connection helpers; they live in :mod:`shared.pg` because the gateway's audit store uses them too."""

from __future__ import annotations

from shared.pg import CONNECT_TIMEOUT, SCHEMES, StoreUrlError, check_url, connect, describe_error, redact

__all__ = ["CONNECT_TIMEOUT", "SCHEMES", "StoreUrlError", "check_url", "connect", "describe_error", "redact"]
