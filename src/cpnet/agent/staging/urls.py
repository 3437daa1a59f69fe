"""URLs as staging reads and shows them: the scheme, the part sent, the part shown."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def scheme_of(url: str) -> str:
    """The URL's scheme, lower case (the registry's key)."""
    return url.split(":", 1)[0].lower()


def strip_fragment(url: str) -> str:
    """The URL without its ``#fragment``, which never goes over the wire (it may hold a sha256)."""
    return url.split("#", 1)[0]


def shown(url: str) -> str:
    """The URL without credentials or query (pre-signed URLs carry secrets there), for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def join_url(url: str, rel: str) -> str:
    """`rel` (a relative path, quoted as the scheme needs) below the directory `url` names; no
    query or fragment."""
    parts = urlsplit(url)
    path = f"{parts.path.rstrip('/')}/{rel}"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
