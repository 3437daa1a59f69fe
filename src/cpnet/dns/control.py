"""A client of Knot DNS's control protocol (the unix socket ``knotc`` talks to), in Python.

Why not ``knotc``: fed a transaction's commands on its stdin, knotc 3.2 spent about 30 ms of CPU
per line, growing with the number of lines (2,000 ``zone-set`` lines took 85 s on this
machine), and it re-splits each line into words, which breaks TXT strings with spaces. Over
the socket the same 2,000 records take about 0.1 s, and each field travels as it is.

The protocol (libknot/control/control.c): a message is a sequence of units, each a type byte
(END 0, DATA 1, EXTRA 2, BLOCK 3); a DATA or EXTRA unit is followed by its items, each a code
byte (16 + the item's index), a big-endian u16 length and that many bytes. A command is one
DATA unit and a BLOCK; the server answers with DATA units (an ``error`` item when it failed)
and a BLOCK; END closes the session. Item indices are those of Knot 3.2 (Debian 12's
``knot``); they are the fields of ``knot_ctl_idx_t``.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

END, DATA, EXTRA, BLOCK = 0, 1, 2, 3
CODE_OFFSET = 16
INDEX = {
    "command": 0,
    "flags": 1,
    "error": 2,
    "section": 3,
    "item": 4,
    "id": 5,
    "zone": 6,
    "owner": 7,
    "ttl": 8,
    "type": 9,
    "data": 10,
    "filter": 11,
}
NAME = {i: n for n, i in INDEX.items()}
MAX_ITEM = 0xFFFF  # bytes in one item
SEND_CHUNK = 256  # commands per write while sending many


class ControlError(RuntimeError):
    """The control socket failed (connection, framing) or the server refused a command."""


def encode(command: str, **items: str) -> bytes:
    """One command: a DATA unit with its items, then a BLOCK (pure)."""
    out = bytearray([DATA])
    for name, value in {"command": command, **items}.items():
        if value is None:
            continue
        raw = value.encode()
        if len(raw) > MAX_ITEM:
            raise ValueError(f"control item {name} is {len(raw)} bytes, over {MAX_ITEM}")
        out += bytes([CODE_OFFSET + INDEX[name]]) + struct.pack("!H", len(raw)) + raw
    out.append(BLOCK)
    return bytes(out)


class Control:
    """One session on Knot's control socket (use as a context manager)."""

    def __init__(self, path: Path | str, timeout: float = 60.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except OSError as exc:
            self.sock.close()
            raise ControlError(f"cannot connect to Knot's control socket {path}: {exc}") from exc
        self._buf = b""
        self._pos = 0

    def __enter__(self) -> Control:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.sendall(bytes([END]))
        except OSError:
            pass
        self.sock.close()

    def call(self, command: str, **items: str) -> list[dict[str, str]]:
        """Send one command, return the server's answer units; ControlError if it refused."""
        try:
            self.sock.sendall(encode(command, **items))
        except OSError as exc:
            raise ControlError(f"sending {command} to Knot's control socket: {exc}") from exc
        answer = self._reply()
        _raise_errors(answer)
        return answer

    def call_many(self, commands: Iterable[tuple[str, Mapping[str, str]]]) -> list[dict[str, str]]:
        """Send many commands and read their answers at the same time; return the answer units
        that carry an error (empty: all accepted).

        Sending and reading overlap (a thread sends): Knot answers each command before it reads
        the next, and a unix socket's buffer holds only a few hundred small answers (each write
        is accounted at its full kernel size), so a client that sent everything before reading
        would stall both sides. Every command is encoded (and checked) before any is sent."""
        encoded = [encode(command, **items) for command, items in commands]
        failed: list[OSError] = []

        def send() -> None:
            try:
                for i in range(0, len(encoded), SEND_CHUNK):
                    self.sock.sendall(b"".join(encoded[i : i + SEND_CHUNK]))
            except OSError as exc:
                failed.append(exc)

        sender = threading.Thread(target=send, name="cpnet-knot-control", daemon=True)
        sender.start()
        errors: list[dict[str, str]] = []
        try:
            for _ in encoded:
                errors.extend(u for u in self._reply() if u.get("error"))
        except BaseException:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)  # unblocks the sender
            raise
        finally:
            sender.join()
        if failed:
            raise ControlError(f"sending to Knot's control socket failed: {failed[0]}")
        return errors

    # ---- reading ----

    def _need(self, n: int) -> None:
        while len(self._buf) - self._pos < n:
            try:
                chunk = self.sock.recv(65536)
            except OSError as exc:
                raise ControlError(f"Knot's control socket: {exc}") from exc
            if not chunk:
                raise ControlError("Knot closed the control connection")
            self._buf = self._buf[self._pos :] + chunk
            self._pos = 0

    def _byte(self) -> int:
        self._need(1)
        b = self._buf[self._pos]
        self._pos += 1
        return b

    def _unit(self) -> tuple[int, dict[str, str]]:
        kind = self._byte()
        items: dict[str, str] = {}
        if kind in (DATA, EXTRA):
            while True:
                self._need(1)
                code = self._buf[self._pos]
                if code < CODE_OFFSET:
                    break  # the next unit's type
                self._pos += 1
                self._need(2)
                (n,) = struct.unpack_from("!H", self._buf, self._pos)
                self._pos += 2
                self._need(n)
                raw = self._buf[self._pos : self._pos + n]
                self._pos += n
                items[NAME.get(code - CODE_OFFSET, str(code))] = raw.decode(errors="replace")
        elif kind not in (END, BLOCK):
            raise ControlError(f"unexpected unit type {kind} from Knot's control socket")
        return kind, items

    def _reply(self) -> list[dict[str, str]]:
        units = []
        while True:
            kind, items = self._unit()
            if kind in (BLOCK, END):
                return units
            units.append(items)


def describe(unit: Mapping[str, str]) -> str:
    """A refused command's answer as one line: the error, then what it was about."""
    about = " ".join(unit[k] for k in ("owner", "ttl", "type", "data") if unit.get(k))
    zone = unit.get("zone", "")
    return f"{unit.get('error')} ({unit.get('command', '?')} {zone} {about})".strip()


def _raise_errors(answer: list[dict[str, str]]) -> None:
    errors = [u for u in answer if u.get("error")]
    if errors:
        raise ControlError("; ".join(describe(u) for u in errors[:5]))
