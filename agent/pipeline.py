"""Composition: linear pipelines, parallel branches, nesting.

A ``Pipeline`` is itself a node, so pipelines nest. Linking is done once, with
each child's emits bound straight to its neighbour's ``receive``: a frame
crossing a pipeline boundary costs no extra queue or task.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from agent.frames import EndFrame, Frame
from agent.node import DOWNSTREAM, UPSTREAM, Node

NodeSpec = Node | Sequence["NodeSpec"]


def as_node(spec: NodeSpec) -> Node:
    """A node as is, or a (nested) list of nodes as a Pipeline."""
    if isinstance(spec, Node):
        return spec
    return Pipeline(spec)


class Pipeline(Node):
    """Nodes in sequence: downstream frames flow first→last, upstream last→first."""

    def __init__(self, nodes: Iterable[NodeSpec], *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.children: list[Node] = [as_node(n) for n in nodes]
        if not self.children:
            raise ValueError("a Pipeline needs at least one node")
        for left, right in zip(self.children, self.children[1:]):
            left.link(right.receive, None)
            right.link(None, left.receive)
        self.children[0].link(None, self._exit_up)
        self.children[-1].link(self._exit_down, None)

    async def _exit_down(self, frame: Frame, direction: int) -> None:
        await self._send_down(frame, direction)

    async def _exit_up(self, frame: Frame, direction: int) -> None:
        await self._send_up(frame, direction)

    async def receive(self, frame: Frame, direction: int = DOWNSTREAM) -> None:
        if direction == DOWNSTREAM:
            await self.children[0].receive(frame, direction)
        else:
            await self.children[-1].receive(frame, direction)

    def attach(self, ctx) -> None:  # type: ignore[no-untyped-def]
        super().attach(ctx)
        for child in self.children:
            child.attach(ctx)

    def nodes(self) -> list[Node]:
        found: list[Node] = [self]
        for child in self.children:
            found.extend(child.nodes())
        return found

    async def stop(self) -> None:
        for child in self.children:
            await child.stop()
        await super().stop()


class Parallel(Node):
    """Fan a frame out to every branch and merge what they emit.

    A frame that entered the parallel leaves it at most once, however many
    branches pass it on (so control frames are not duplicated); frames a branch
    creates all leave. ``EndFrame`` leaves only once every branch has passed it,
    so nothing a slow branch still holds is cut off. The record of entered frames
    is bounded, unlike a set that grows for the whole call.
    """

    MEMORY = 4096

    def __init__(self, *branches: NodeSpec, name: str | None = None) -> None:
        super().__init__(name=name)
        if len(branches) < 2:
            raise ValueError("Parallel needs at least two branches")
        self.branches: list[Node] = [as_node(b) for b in branches]
        self._entered: OrderedDict[int, int] = OrderedDict()
        for branch in self.branches:
            branch.link(self._merge_down, self._merge_up)

    async def receive(self, frame: Frame, direction: int = DOWNSTREAM) -> None:
        if self._stopped:
            return
        entered = self._entered
        entered[frame.id] = 0
        if len(entered) > self.MEMORY:
            entered.popitem(last=False)
        for branch in self.branches:
            await branch.receive(frame, direction)

    async def _merge(self, frame: Frame, direction: int) -> None:
        seen = self._entered.get(frame.id)
        if seen is None:
            await self.emit(frame, direction)
            return
        seen += 1
        self._entered[frame.id] = seen
        if isinstance(frame, EndFrame):
            if seen == len(self.branches):
                await self.emit(frame, direction)
        elif seen == 1:
            await self.emit(frame, direction)

    async def _merge_down(self, frame: Frame, direction: int) -> None:
        await self._merge(frame, DOWNSTREAM)

    async def _merge_up(self, frame: Frame, direction: int) -> None:
        await self._merge(frame, UPSTREAM)

    def attach(self, ctx) -> None:  # type: ignore[no-untyped-def]
        super().attach(ctx)
        for branch in self.branches:
            branch.attach(ctx)

    def nodes(self) -> list[Node]:
        found: list[Node] = [self]
        for branch in self.branches:
            found.extend(branch.nodes())
        return found

    async def stop(self) -> None:
        for branch in self.branches:
            await branch.stop()
        await super().stop()
