"""The frame graph: ordering, lanes, backpressure, fan-out, interrupts, isolation."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from agent import DOWNSTREAM, UPSTREAM, Node, Parallel, Pipeline, Session
from agent.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioFrame,
    InterruptFrame,
    LLMTextFrame,
    OutputAudioFrame,
    SpeakFrame,
    TranscriptionFrame,
)
from tests.core.helpers import Collect, SlowSink, bot_audio

pytestmark = pytest.mark.asyncio


async def start(session: Session) -> asyncio.Task:
    task = asyncio.create_task(session.run())
    await asyncio.wait_for(session.started.wait(), 2)
    return task


async def test_frames_flow_in_order_both_ways() -> None:
    first, second = Collect("first"), Collect("second")
    session = Session([first, second])
    task = await start(session)
    for i in range(5):
        await session.push(TranscriptionFrame(text=str(i)))
    await second.emit(ErrorFrame(message="up"), UPSTREAM)
    await session.end()
    result = await asyncio.wait_for(task, 2)
    assert [f.text for f in second.of(TranscriptionFrame)] == ["0", "1", "2", "3", "4"]
    assert [f.message for f in first.of(ErrorFrame, UPSTREAM)] == ["up"]
    assert result.reason == "completed"


async def test_urgent_frames_overtake_queued_media() -> None:
    sink = SlowSink(delay=0.02, max_queued_media=100)
    session = Session([Node(), sink])
    task = await start(session)
    for i in range(20):
        await session.push(bot_audio(i))
    await session.push(ErrorFrame(message="urgent"))
    kinds = [type(f).__name__ for f, _ in sink.seen]
    # The error is handled before most of the 20 queued audio frames (0.4 s of work).
    assert "ErrorFrame" in kinds
    assert kinds.index("ErrorFrame") <= 2
    await session.cancel()
    await task


async def test_ordered_control_stays_behind_media() -> None:
    sink = SlowSink(delay=0.005, max_queued_media=100)
    session = Session([sink])
    task = await start(session)
    for i in range(5):
        await session.push(bot_audio(i))
    await session.push(LLMTextFrame(text="after"))
    await session.end()
    await asyncio.wait_for(task, 2)
    kinds = [type(f).__name__ for f, _ in sink.seen if not type(f).__name__.startswith("Start")]
    assert kinds == ["OutputAudioFrame"] * 5 + ["LLMTextFrame", "EndFrame"]


async def test_backpressure_bounds_the_queue() -> None:
    sink = SlowSink(delay=0.01, max_queued_media=4)
    session = Session([sink])
    task = await start(session)
    began = time.monotonic()
    for i in range(20):
        await session.push(bot_audio(i))
        assert sink._inbox is not None and sink._inbox.media_count <= 4
    # 20 frames through a 4-deep queue at 10 ms each: the producer was held back.
    assert time.monotonic() - began >= 0.12
    await session.end()
    await asyncio.wait_for(task, 3)
    assert len(sink.of(OutputAudioFrame)) == 20


async def test_interrupt_flushes_queued_bot_audio_but_keeps_user_input_and_uninterruptible() -> None:
    sink = SlowSink(delay=0.02, max_queued_media=200)
    session = Session([sink])
    task = await start(session)
    for i in range(100):  # 2 s of bot audio queued behind a real-time sink
        await session.push(bot_audio(i))
    await session.push(InputAudioFrame(pcm=b"\x00\x00" * 320, sample_rate=16000))
    notice = OutputAudioFrame(pcm=b"\x00\x00" * 320, sample_rate=16000, uninterruptible=True, text="legal")
    await session.push(notice)
    began = time.monotonic()
    await session.push(InterruptFrame())
    await asyncio.sleep(0.1)
    audio = sink.of(OutputAudioFrame)
    assert len(audio) <= 3, "queued bot audio kept playing after the interrupt"
    assert any(f.text == "legal" for f in audio)
    assert sink.of(InputAudioFrame), "caller audio must survive an interrupt"
    assert sink.of(InterruptFrame)[0] is not None
    assert time.monotonic() - began < 0.5
    await session.cancel()
    await task


async def test_interrupt_cancels_a_slow_nodes_work_promptly() -> None:
    cancelled = asyncio.Event()

    class SlowGenerator(Node):
        async def process(self, frame: Frame, direction: int) -> None:
            if isinstance(frame, SpeakFrame):
                self.spawn(self._generate())
            await self.emit(frame, direction)

        async def _generate(self) -> None:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    session = Session([SlowGenerator()])
    task = await start(session)
    await session.push(SpeakFrame(text="a long answer"))
    await asyncio.sleep(0.01)  # the generation is under way
    began = time.monotonic()
    await session.push(InterruptFrame())
    await asyncio.wait_for(cancelled.wait(), 1)
    assert time.monotonic() - began < 0.05
    await session.cancel()
    await task


async def test_uninterruptible_node_keeps_its_work() -> None:
    finished = asyncio.Event()

    class Disclaimer(Node):
        async def process(self, frame: Frame, direction: int) -> None:
            if isinstance(frame, SpeakFrame):
                self.spawn(self._say())
            await self.emit(frame, direction)

        async def _say(self) -> None:
            await asyncio.sleep(0.05)
            finished.set()

    session = Session([Disclaimer(interruptible=False)])
    task = await start(session)
    await session.push(SpeakFrame(text="calls are recorded"))
    await session.push(InterruptFrame())
    await asyncio.wait_for(finished.wait(), 1)
    await session.cancel()
    await task


async def test_parallel_fans_out_and_merges_without_duplicates() -> None:
    class Upper(Node):
        async def process(self, frame: Frame, direction: int) -> None:
            await self.emit(frame, direction)
            if isinstance(frame, TranscriptionFrame):
                await self.emit(LLMTextFrame(text=frame.text.upper()))

    class Drop(Node):
        async def process(self, frame: Frame, direction: int) -> None:
            if not isinstance(frame, TranscriptionFrame):
                await self.emit(frame, direction)

    after = Collect("after")
    session = Session([Parallel([Upper()], [Drop(), Collect("b2")]), after])
    task = await start(session)
    await session.push(TranscriptionFrame(text="hi"))
    await session.end()
    result = await asyncio.wait_for(task, 2)
    assert [f.text for f in after.of(TranscriptionFrame)] == ["hi"]  # once, though one branch dropped it
    assert [f.text for f in after.of(LLMTextFrame)] == ["HI"]
    assert len(after.of(EndFrame)) == 1
    assert result.reason == "completed"


async def test_parallel_end_waits_for_the_slowest_branch() -> None:
    slow = SlowSink(delay=0.02, max_queued_media=50)
    after = Collect("after")
    session = Session([Parallel([Node()], [slow]), after])
    task = await start(session)
    for i in range(5):
        await session.push(bot_audio(i))
    await session.end()
    await asyncio.wait_for(task, 2)
    kinds = [type(f).__name__ for f, _ in after.seen]
    assert kinds[-1] == "EndFrame"
    assert len(slow.of(OutputAudioFrame)) == 5


async def test_nested_pipelines_link_through() -> None:
    inner = Collect("inner")
    outer = Collect("outer")
    session = Session(Pipeline([Pipeline([Node(), inner]), [Node(), outer]]))
    task = await start(session)
    await session.push(TranscriptionFrame(text="x"))
    await outer.emit(ErrorFrame(message="back"), UPSTREAM)
    await session.end()
    await asyncio.wait_for(task, 2)
    assert [f.text for f in outer.of(TranscriptionFrame)] == ["x"]
    assert [f.message for f in inner.of(ErrorFrame, UPSTREAM)] == ["back"]


async def test_a_failing_node_ends_only_its_own_session(caplog: pytest.LogCaptureFixture) -> None:
    class Exploding(Node):
        async def process(self, frame: Frame, direction: int) -> None:
            if isinstance(frame, TranscriptionFrame) and frame.text == "boom":
                raise RuntimeError("model crashed")
            await self.emit(frame, direction)

    healthy_sink = Collect("healthy")
    bad = Session([Exploding(name="stt")], session_id="bad")
    good = Session([Exploding(name="stt"), healthy_sink], session_id="good")
    errors: list[ErrorFrame] = []
    bad.subscribe(lambda f, d: errors.append(f) if isinstance(f, ErrorFrame) else None)
    bad_task, good_task = await start(bad), await start(good)
    with caplog.at_level(logging.ERROR):
        await bad.push(TranscriptionFrame(text="boom"))
        bad_result = await asyncio.wait_for(bad_task, 2)
    assert bad_result.reason == "error"
    assert "stt" in (bad_result.error or "") and "model crashed" in (bad_result.error or "")
    assert errors and errors[0].node == "stt"
    assert any("node stt failed" in r.getMessage() and "bad" in r.getMessage() for r in caplog.records)
    # The other call is untouched and keeps working.
    assert not good_task.done()
    await good.push(TranscriptionFrame(text="still here"))
    await good.end()
    good_result = await asyncio.wait_for(good_task, 2)
    assert good_result.reason == "completed"
    assert [f.text for f in healthy_sink.of(TranscriptionFrame)] == ["still here"]


async def test_a_failing_background_task_fails_the_session() -> None:
    class Flaky(Node):
        async def on_start(self) -> None:
            self.spawn(self._work())

        async def _work(self) -> None:
            await asyncio.sleep(0.01)
            raise ValueError("stream broke")

    session = Session([Flaky()])
    result = await asyncio.wait_for(session.run(), 2)
    assert result.reason == "error" and "stream broke" in (result.error or "")


async def test_teardown_cancels_every_task() -> None:
    class Busy(Node):
        async def on_start(self) -> None:
            self.spawn(asyncio.sleep(100), interruptible=False)

    before = len(asyncio.all_tasks())
    session = Session([Busy(), Busy()])
    task = await start(session)
    assert len(asyncio.all_tasks()) >= before + 3
    await session.cancel()
    await task
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == before


async def test_max_duration_ends_the_call() -> None:
    session = Session([Node()], max_duration_s=0.05)
    result = await asyncio.wait_for(session.run(), 2)
    assert result.reason == "max_duration"
