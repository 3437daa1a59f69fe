"""The factory's side: run inside the "factory" network namespace (run.py starts it there).

Subcommands, each printing one JSON document:

- ``rtt URL [--n 15]``: median/min time of a tiny GET (the path's round trip: through the
  relay that delays this link, plus the HTTP request's own time).
- ``infer URL [--n 60]``: send N camera frames to the inspection service one after another
  and time each request end to end (connect, send, model, answer); p50/p95 and accuracy.
- ``until-up URL --deadline S``: poll ``/health`` until the service answers; the wall-clock
  time (``time.time()``) of the first answer, or ``up: false`` at the deadline.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service import LABELS, part


def request(url: str, method: str = "GET", body: bytes | None = None, timeout: float = 2.0):
    """One request on a fresh connection: (status, parsed JSON body)."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, u.path + (f"?{u.query}" if u.query else ""), body, headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if data[:1] in (b"{", b"[") else None)
    finally:
        conn.close()


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def rtt(url: str, n: int) -> dict:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        status, _ = request(url)
        if status == 200:
            times.append((time.perf_counter() - t0) * 1000)
    if not times:
        return {"ok": False, "error": f"no answer from {url}"}
    return {
        "ok": True,
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "n": len(times),
    }


def infer(url: str, n: int, timeout: float) -> dict:
    rng = random.Random(2026)
    times, errors, right = [], [], 0
    for i in range(n):
        label = i % len(LABELS)
        body = json.dumps({"pixels": part(label, rng)}).encode()
        t0 = time.perf_counter()
        try:
            status, answer = request(url.rstrip("/") + "/predict", "POST", body, timeout)
        except OSError as e:
            errors.append(f"{type(e).__name__}: {e}")
            continue
        ms = (time.perf_counter() - t0) * 1000
        if status != 200 or not answer:
            errors.append(f"HTTP {status}")
            continue
        times.append(ms)
        right += answer["label"] == LABELS[label]
    out: dict = {"sent": n, "ok": len(times), "failed": len(errors), "errors": sorted(set(errors))}
    if times:
        out |= {
            "p50_ms": pct(times, 0.5),
            "p95_ms": pct(times, 0.95),
            "max_ms": max(times),
            "accuracy": right / len(times),
        }
    return out


def until_up(url: str, deadline_s: float) -> dict:
    end = time.monotonic() + deadline_s
    tries = 0
    while time.monotonic() < end:
        tries += 1
        try:
            status, body = request(url.rstrip("/") + "/health", timeout=1.0)
            if status == 200 and body and body.get("ready"):
                return {"up": True, "at": time.time(), "tries": tries, "health": body}
        except OSError:
            pass
        time.sleep(0.05)
    return {"up": False, "tries": tries}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("rtt")
    a.add_argument("url")
    a.add_argument("--n", type=int, default=15)
    b = sub.add_parser("infer")
    b.add_argument("url")
    b.add_argument("--n", type=int, default=60)
    b.add_argument("--timeout", type=float, default=2.0)
    c = sub.add_parser("until-up")
    c.add_argument("url")
    c.add_argument("--deadline", type=float, required=True)
    args = p.parse_args()
    if args.cmd == "rtt":
        out = rtt(args.url, args.n)
    elif args.cmd == "infer":
        out = infer(args.url, args.n, args.timeout)
    else:
        out = until_up(args.url, args.deadline)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
