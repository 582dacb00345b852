"""Helpers of the tests that start real processes (servers, launchers, "nodes" on 127.0.0.1)."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
