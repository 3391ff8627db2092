"""Bots for the serving tests: the call's graph is just its two transports."""

from __future__ import annotations

from agent.calls import CallInfo
from agent.node import Node


def quiet(info: CallInfo) -> list[Node]:
    """A bot that says nothing; the call lasts as long as its caller."""
    return []
