"""The SSRF rule: which addresses an http(s) input or output may reach.

A task names URLs; the agent (and, for literal addresses, the hub) fetches and uploads them from
inside a provider's network. Without a rule a task could read the provider's metadata service
(169.254.169.254), its intranet, or the agent's own machine. So a URL whose host resolves to a
loopback, link-local, private (RFC 1918, RFC 6598 shared, IPv6 unique local), multicast,
unspecified or otherwise reserved address is refused, unless the operator allows it: an allow
list of CIDRs and host names (`allow_private_urls = "10.0.0.0/8,minio.internal"`; `*` allows
everything). Every address a name resolves to is checked — one bad address refuses the URL — and
the caller connects to a checked address (no second lookup a rebinding DNS could answer
differently), and checks again on every redirect. Pure: the caller resolves names.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Net = ipaddress.IPv4Network | ipaddress.IPv6Network
OPTION = "allow_private_urls"  # the agent option (and CPNET_ALLOW_PRIVATE_URLS at the hub)

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT: not public


@dataclass(frozen=True, slots=True)
class UrlRule:
    """What the operator allows beyond public addresses: networks, host names, or everything."""

    nets: tuple[Net, ...] = ()
    hosts: frozenset[str] = frozenset()
    everything: bool = False

    def __str__(self) -> str:
        if self.everything:
            return "*"
        return ",".join([*(str(n) for n in self.nets), *sorted(self.hosts)])


STRICT = UrlRule()
OPEN = UrlRule(everything=True)


def parse_allow(text: str | Sequence[str] | None, name: str = OPTION) -> UrlRule:
    """`"10.0.0.0/8, minio.internal, ::1"` (or a list of such items) as a UrlRule; ValueError
    naming the setting `name` and the item for anything that is neither a CIDR, an address nor a
    host name."""
    if text is None:
        return STRICT
    items = text.split(",") if isinstance(text, str) else list(text)
    nets: list[Net] = []
    hosts: set[str] = set()
    for raw in items:
        item = raw.strip().lower()
        if not item:
            continue
        if item == "*":
            return OPEN
        try:
            nets.append(ipaddress.ip_network(item.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        label_ok = all(
            part and len(part) <= 63 and part.replace("-", "").isalnum()
            for part in item.rstrip(".").split(".")
        )
        if "/" in item or not label_ok or len(item) > 253:
            raise ValueError(
                f"{name}: {raw.strip()!r} is neither a CIDR (10.0.0.0/8), an address nor a host "
                "name (minio.internal)"
            )
        hosts.add(item.rstrip("."))
    return UrlRule(tuple(nets), frozenset(hosts))


def plain(address: IP) -> IP:
    """The IPv4 address an IPv4-mapped (or 6to4) IPv6 address stands for; else `address`."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return mapped
    return address


def forbidden(address: IP) -> str | None:
    """Why `address` is not a public one ("a loopback address", ...), or None if it is."""
    address = plain(address)
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private or address in _SHARED:
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "a reserved address"
    return None


def refusal(host: str, addresses: Iterable[str], rule: UrlRule) -> str | None:
    """Why a URL whose host `host` resolved to `addresses` may not be reached under `rule`, or
    None when it may. Every address must pass: a name with one private address is refused."""
    if rule.everything:
        return None
    name = host.strip("[]").lower().rstrip(".")
    if name in rule.hosts:
        return None
    for text in addresses:
        address = plain(ipaddress.ip_address(text.split("%", 1)[0]))  # no IPv6 zone
        why = forbidden(address)
        if why is None or any(address in net for net in rule.nets):
            continue
        shown = "" if literal(name) == address else f"{host} resolves to "
        bits = address.max_prefixlen
        return (
            f"{shown}{address}, {why}: staging reaches no loopback, link-local, private, "
            f"multicast or reserved address unless the agent's operator allows it "
            f'(option {OPTION}, e.g. "{address}/{bits}" or the host name)'
        )
    return None


def literal(host: str) -> IP | None:
    """The address a URL's host names literally (`127.0.0.1`, `[::1]`), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def literal_refusal(url: str, rule: UrlRule) -> str | None:
    """ "127.0.0.1, a loopback address" when an http(s) `url`'s host is a literal address that
    `rule` does not allow (what the hub can tell at submission without resolving names), else
    None."""
    from urllib.parse import urlsplit

    if not url.lower().startswith(("http://", "https://")):
        return None
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return None
    address = literal(host)
    if address is None or refusal(host, [str(address)], rule) is None:
        return None
    return f"{plain(address)}, {forbidden(address)}"
