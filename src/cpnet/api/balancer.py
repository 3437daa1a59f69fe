"""An HAProxy configuration for hub replicas: what docs/operations.md shows, the tests start
and the replicas benchmark measures (one place, so the three cannot drift apart).

The choices, each for a reason:

- ``balance leastconn``: agents' long polls hold a connection for up to a minute each, so
  counting connections spreads the real load better than taking turns.
- Health checks ``GET /v1/health`` every ``check_ms``; a replica is out after 2 failures, back
  after 1 success.
- ``timeout server`` above the longest long poll (``MAX_WAIT_S`` = 60 s), or HAProxy would cut
  agents' polls short.
- Retries on another replica (``option redispatch``): any request that never reached a replica
  (``conn-failure``), and GET/HEAD also when the replica closed without answering
  (``empty-response``: it died under the request). Other methods are not replayed by the
  balancer (``disable-l7-retry``): the SDK sends them again itself, with the idempotency key
  that makes a repeat harmless (a 502 is retried for idempotent calls, cpnet/client.py).
"""

from __future__ import annotations

from collections.abc import Sequence

LONG_POLL_TIMEOUT_S = 90  # longer than api/routers/agents.MAX_WAIT_S (60 s)


def haproxy_config(
    bind: str,
    backends: Sequence[str],
    *,
    check_ms: int = 1000,
    maxconn: int = 4096,
    log_stdout: bool = False,
) -> str:
    """``haproxy.cfg`` for a frontend on `bind` (``HOST:PORT``) balancing over `backends`
    (``HOST:PORT`` of each hub replica); `log_stdout`: a line per request on stdout (status,
    retries, which replica), for a foreground HAProxy."""
    servers = "\n".join(
        f"    server hub{i} {addr} check inter {check_ms} fall 2 rise 1"
        for i, addr in enumerate(backends)
    )
    log = ("    log stdout format raw local0\n", "    log global\n    option httplog\n")
    glob, dflt = log if log_stdout else ("", "")
    return f"""\
global
    maxconn {maxconn}
{glob}
defaults
    mode http
{dflt}    timeout connect 2s
    timeout client {LONG_POLL_TIMEOUT_S}s
    timeout server {LONG_POLL_TIMEOUT_S}s
    timeout http-keep-alive 60s
    timeout queue 30s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response

frontend cpnet_hub
    bind {bind}
    default_backend cpnet_replicas

backend cpnet_replicas
    balance leastconn
    option httpchk GET /v1/health
    http-check expect status 200
    http-request disable-l7-retry unless METH_GET
{servers}
"""
