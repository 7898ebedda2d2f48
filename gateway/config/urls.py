"""What makes a ledger or TSA URL in the config unusable, in words a technician can act on."""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["url_problem"]


def url_problem(url: str) -> str | None:
    """Why ``url`` is not an http(s) URL the gateway can post to (None: it is).

    A URL carrying a user name or password is refused: it would be shown in logs and
    status wherever the URL is; secrets have their own keys (docs/operations.md, Secrets).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a port that is not a number, a bad IPv6 literal
        return f"{url!r} is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"{url!r} is not an http:// or https:// URL"
    if not parts.hostname:
        return f"{url!r} names no host (expected e.g. https://host:port/path)"
    if parts.username is not None or parts.password is not None:
        return (
            "carries a user name or password in the URL (not shown); URLs appear in logs "
            "and status, so give credentials through the secret keys instead"
        )
    if port == 0:
        return f"{url!r}: port 0 is not a TCP port"
    return None
