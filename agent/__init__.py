"""voxwire's core: frames, nodes, graphs and sessions for real-time voice agents."""

from agent.frames import *  # noqa: F403 - the frame vocabulary is the public API
from agent.frames import Frame
from agent.node import DOWNSTREAM, UPSTREAM, Direction, Node
from agent.pipeline import Parallel, Pipeline
from agent.session import Session, SessionResult
from agent.workers import run_blocking

__all__ = [
    "DOWNSTREAM",
    "UPSTREAM",
    "Direction",
    "Frame",
    "Node",
    "Parallel",
    "Pipeline",
    "Session",
    "SessionResult",
    "run_blocking",
]
