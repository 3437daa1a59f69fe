"""The SSRF guard for http(s) staging: resolve a URL's host once, check every address against
the operator's rule (cpnet.limits.ssrf), and connect to the checked address.

Connecting by address (the URL's host replaced by it, `Host` and TLS SNI kept on the name, so a
certificate is still verified against the name) means no second DNS lookup happens between the
check and the connection: a rebinding name cannot answer "public" to the check and "private" to
the connection. Redirects are followed here, one at a time, each target checked the same way.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

from cpnet.agent.staging.errors import StagingError
from cpnet.agent.staging.urls import shown
from cpnet.limits.ssrf import UrlRule, refusal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_PORTS = {"http": 80, "https": 443}


class Unresolved(Exception):
    """The host name did not resolve (maybe for now: the caller decides whether to retry)."""


@dataclass(frozen=True, slots=True)
class Pinned:
    """A URL rewritten to connect to a checked address, with what keeps the name visible."""

    url: str  # the host replaced by the checked address
    headers: dict[str, str]  # Host: the original host[:port]
    extensions: dict[str, Any]  # httpx's sni_hostname for https (verified against the name)


def pin(url: str, rule: UrlRule, verb: str) -> Pinned:
    """`url` pinned to an address the rule allows; StagingError naming the rule if none may be
    reached, Unresolved if the name does not resolve."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host:
        raise StagingError(f"{verb} {shown(url)}: the URL has no host")
    port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower(), 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Unresolved(f"{verb} {shown(url)}: cannot resolve {host}: {exc}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise Unresolved(f"{verb} {shown(url)}: {host} has no address")
    why = refusal(host, addresses, rule)
    if why is not None:
        raise StagingError(f"{verb} {shown(url)}: refused: {why}")
    address = addresses[0]
    netloc_host = f"[{address}]" if ":" in address else address
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{netloc_host}:{parts.port}" if parts.port else netloc_host
    if userinfo:
        netloc = f"{userinfo}@{netloc}"
    original = parts.netloc.rpartition("@")[2]
    extensions: dict[str, Any] = {}
    if parts.scheme.lower() == "https":
        extensions["sni_hostname"] = host
    return Pinned(
        urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)),
        {"Host": original},
        extensions,
    )


def location(url: str, response: Any) -> str:
    """Where a redirect points, absolute."""
    return urljoin(url, response.headers.get("location", ""))
