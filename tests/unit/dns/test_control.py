"""Knot's control protocol framing (cpnet.dns.control) against the layout of libknot 3.2."""

from __future__ import annotations

import socket
import threading

import pytest

from cpnet.dns.control import BLOCK, DATA, Control, ControlError, encode


def test_a_command_is_one_data_unit_of_items_then_a_block() -> None:
    raw = encode("zone-set", zone="z.", owner="a.z.", ttl="300", type="TXT", data='"a b"')
    assert raw[0] == DATA and raw[-1] == BLOCK
    # items: code (16 + index), big-endian length, bytes; command is index 0, zone 6, data 10
    assert raw[1:3] == bytes([16, 0]) and raw[3] == len("zone-set") and raw[4:12] == b"zone-set"
    assert bytes([16 + 6, 0, 2]) + b"z." in raw
    assert bytes([16 + 10, 0, 5]) + b'"a b"' in raw


def test_an_item_over_64_kib_is_refused() -> None:
    with pytest.raises(ValueError, match="control item data is 70000 bytes"):
        encode("zone-set", data="x" * 70000)


def _serve_once(server: socket.socket, reply: bytes) -> None:
    conn, _ = server.accept()
    with conn:
        conn.recv(65536)
        conn.sendall(reply)
        conn.recv(65536)  # END


def test_an_error_item_in_the_answer_is_raised_naming_the_command(tmp_path) -> None:
    path = tmp_path / "ctl.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    reply = encode("zone-set", error="parser failed", zone="z.", owner="a.z.", type="URI")
    t = threading.Thread(target=_serve_once, args=(server, reply))
    t.start()
    try:
        with Control(path, timeout=5) as ctl, pytest.raises(ControlError) as err:
            ctl.call("zone-set", zone="z.", owner="a.z.", ttl="1", type="URI", data="bogus")
        assert "parser failed (zone-set z. a.z. URI)" in str(err.value)
    finally:
        t.join(5)
        server.close()


def test_connecting_to_no_server_says_which_socket(tmp_path) -> None:
    with pytest.raises(ControlError, match=r"cannot connect to Knot's control socket .*nope"):
        Control(tmp_path / "nope")
