"""The suite's own ports: CI's two passes, run at once, never pick the same one."""

from __future__ import annotations

import socket

import pytest

from servers import free_port, port_class

PICKS = 100


@pytest.mark.parametrize("of_class", [0, 1])
def test_a_pass_picks_only_free_ports_of_its_class(of_class: int) -> None:
    ports = [free_port(of_class) for _ in range(PICKS)]
    assert {port // 2 % 2 for port in ports} == {of_class}
    for port in ports[:10]:  # each is free when returned: a server can bind it
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_without_a_class_any_port_is_picked() -> None:
    ports = [free_port(None) for _ in range(PICKS)]
    assert {port // 2 % 2 for port in ports} == {0, 1}


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("", None), ("0", 0), ("1", 1)])
def test_the_class_is_read_from_the_environment(value: str | None, expected: int | None) -> None:
    assert port_class(value) == expected


@pytest.mark.parametrize("value", ["2", "-1", "one", " 0"])
def test_a_class_that_is_not_0_or_1_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="TEST_PORT_CLASS is 0 or 1"):
        port_class(value)
