"""Bearer-token check shared by the gRPC and HTTP receivers."""
from __future__ import annotations

import hmac


def bearer_ok(header: str | None, token: str | None) -> bool:
    """True when no token is required, or *header* is ``Bearer <token>``."""
    if not token:
        return True
    if not header:
        return False
    scheme, _, given = header.strip().partition(" ")
    # constant-time: the comparison must not leak how much of the token matched
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
