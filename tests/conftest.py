"""Fixtures: one real nats-server per test session (on a free port), buses connected to it."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest

from bus import Bus, EmbeddedServer

_ns = itertools.count(1)


@pytest.fixture(scope="session")
async def nats_server() -> AsyncIterator[EmbeddedServer]:
    async with EmbeddedServer() as server:
        yield server


@pytest.fixture
def namespace() -> str:
    """A fresh namespace per test, so tests sharing the server never see each other's traffic."""
    return f"t{next(_ns)}"


@pytest.fixture
async def bus(nats_server: EmbeddedServer, namespace: str) -> AsyncIterator[Bus]:
    async with Bus(nats_server.url, namespace=namespace, name="test") as b:
        yield b


@pytest.fixture
async def other_bus(nats_server: EmbeddedServer, namespace: str) -> AsyncIterator[Bus]:
    async with Bus(nats_server.url, namespace=namespace, name="test-other") as b:
        yield b
