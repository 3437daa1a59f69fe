"""The inference service the task runs: a visual-inspection classifier behind a tiny HTTP API.

Shipped to the task as a blob (its only input) and started by the task's executor, it fits a
small PyTorch network at start on synthetic 16 x 16 grey images of a machined part (good,
scratched, dented; generated from a fixed seed, so it needs no download) and answers:

- ``GET /health``: ``{"ready": true, "accuracy": <on held-out images>, "fit_s": ...}``
- ``POST /predict`` with ``{"pixels": [256 floats 0..1]}``: ``{"label": "scratch", "p": 0.98}``

The factory's client (factory.py) imports ``part`` from here to make its camera frames, so both
sides draw from the same distribution. Only the standard library is needed to import this
module; torch is imported when the server starts.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SIZE = 16
LABELS = ("good", "scratch", "dent")


def part(label: int, rng: random.Random) -> list[float]:
    """One camera frame of a part: a bright disc, plus a dark scratch or dent, plus noise."""
    cx, cy, r = 7.5 + rng.uniform(-1, 1), 7.5 + rng.uniform(-1, 1), rng.uniform(5.5, 7)
    img = [0.1 + rng.uniform(0, 0.05)] * (SIZE * SIZE)
    img = [
        0.8 if math.hypot(x - cx, y - cy) <= r else img[y * SIZE + x]
        for y in range(SIZE)
        for x in range(SIZE)
    ]
    if label == 1:  # a scratch: a thin dark line across the disc
        angle = rng.uniform(0, math.pi)
        dx, dy = math.cos(angle), math.sin(angle)
        ox, oy = cx + rng.uniform(-2, 2), cy + rng.uniform(-2, 2)
        for t in range(-12, 13):
            x, y = round(ox + t * 0.5 * dx), round(oy + t * 0.5 * dy)
            if 0 <= x < SIZE and 0 <= y < SIZE and math.hypot(x - cx, y - cy) <= r:
                img[y * SIZE + x] = 0.25
    elif label == 2:  # a dent: a dark round spot
        ex, ey, er = cx + rng.uniform(-3, 3), cy + rng.uniform(-3, 3), rng.uniform(1.2, 2.2)
        for y in range(SIZE):
            for x in range(SIZE):
                if math.hypot(x - ex, y - ey) <= er and math.hypot(x - cx, y - cy) <= r:
                    img[y * SIZE + x] = 0.35
    return [min(1.0, max(0.0, v + rng.gauss(0, 0.04))) for v in img]


def dataset(n: int, seed: int) -> tuple[list[list[float]], list[int]]:
    rng = random.Random(seed)
    labels = [i % len(LABELS) for i in range(n)]
    return [part(y, rng) for y in labels], labels


def fit(seed: int = 7):  # type: ignore[no-untyped-def]
    """Fit the classifier; return (model, held-out accuracy, seconds)."""
    import torch
    from torch import nn

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    t0 = time.monotonic()
    xs, ys = dataset(900, seed)
    x = torch.tensor(xs).view(-1, 1, SIZE, SIZE)
    y = torch.tensor(ys)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, len(LABELS)),
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(8):
        for i in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i]), y[i]).backward()
            opt.step()
    model.eval()
    tx, ty = dataset(300, seed + 1)
    with torch.no_grad():
        guess = model(torch.tensor(tx).view(-1, 1, SIZE, SIZE)).argmax(1)
    accuracy = float((guess == torch.tensor(ty)).float().mean())
    return model, accuracy, time.monotonic() - t0


def serve(port: int) -> None:
    import torch

    model, accuracy, fit_s = fit()
    health = json.dumps({"ready": True, "accuracy": accuracy, "fit_s": round(fit_s, 2)}).encode()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, health)
            else:
                self._send(404, b'{"error": "no such path"}')

        def do_POST(self) -> None:
            try:
                data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                pixels = [float(v) for v in data["pixels"]]
                if len(pixels) != SIZE * SIZE:
                    raise ValueError(f"give {SIZE * SIZE} pixels")
            except (ValueError, KeyError, TypeError) as e:
                self._send(400, json.dumps({"error": str(e)}).encode())
                return
            with torch.no_grad():
                p = torch.softmax(model(torch.tensor(pixels).view(1, 1, SIZE, SIZE)), 1)[0]
            k = int(p.argmax())
            self._send(200, json.dumps({"label": LABELS[k], "p": float(p[k])}).encode())

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per request would flood the task's log

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    print(f"inspection model fitted in {fit_s:.1f} s, accuracy {accuracy:.3f}; port {port}")
    server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="visual-inspection inference service")
    parser.add_argument("--port", type=int, required=True)
    serve(parser.parse_args().port)
