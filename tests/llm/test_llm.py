"""The LLM hook: hook shapes, streaming client, tool calls, apologies, heard-only history."""

from __future__ import annotations

import asyncio
import json

import pytest

from agent import UPSTREAM, Session
from agent.conversation import Conversation, UserInput
from agent.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    DTMFFrame,
    ErrorFrame,
    InterruptFrame,
    LLMTextFrame,
    LLMTurnEndFrame,
    PlayoutProgressFrame,
    UserTurnFrame,
)
from agent.llm import LLMNode, iterate_hook
from agent.openai_llm import LLMError, OpenAICompatibleLLM, Tool
from tests.core.helpers import Collect
from tests.llm.openai_emulator import ChatEmulator

pytestmark = pytest.mark.asyncio


async def collect(hook) -> str:  # type: ignore[no-untyped-def]
    return "".join([d async for d in iterate_hook(hook, Conversation(), UserInput("hi"))])


async def test_every_hook_shape_works() -> None:
    def plain(conv, user):  # type: ignore[no-untyped-def]
        return f"you said {user}"

    async def coroutine(conv, user):  # type: ignore[no-untyped-def]
        return "async " + user.text

    async def generator(conv, user):  # type: ignore[no-untyped-def]
        for word in ("one ", "two"):
            yield word

    assert await collect(plain) == "you said hi"
    assert await collect(coroutine) == "async hi"
    assert await collect(generator) == "one two"


async def run_llm(node: LLMNode):  # type: ignore[no-untyped-def]
    sink = Collect("sink")
    session = Session([node, sink])
    task = asyncio.create_task(session.run())
    await session.started.wait()
    return session, task, sink


async def test_answer_streams_and_history_records_it() -> None:
    async def hook(conv, user):  # type: ignore[no-untyped-def]
        yield "Hello "
        yield "there."

    node = LLMNode(hook, system_prompt="be brief")
    session, task, sink = await run_llm(node)
    await session.push(UserTurnFrame(text="hi", turn_id=1))
    await asyncio.sleep(0.05)
    assert [f.text for f in sink.of(LLMTextFrame)] == ["Hello ", "there."]
    assert sink.of(LLMTurnEndFrame)[0].text == "Hello there."
    assert [(m.role, m.content) for m in node.conversation.messages] == [("user", "hi"), ("assistant", "Hello there.")]
    await session.cancel()
    await task


async def test_interrupted_answer_keeps_only_the_heard_words() -> None:
    async def hook(conv, user):  # type: ignore[no-untyped-def]
        yield "Your appointment is on Monday at nine. Please bring your card."

    node = LLMNode(hook)
    session, task, sink = await run_llm(node)
    await session.push(UserTurnFrame(text="when is it", turn_id=3))
    await asyncio.sleep(0.02)
    # The output reports, upstream, what the caller heard before the barge-in.
    await sink.emit(BotStartedSpeakingFrame(turn_id=3), UPSTREAM)
    await sink.emit(PlayoutProgressFrame(turn_id=3, played_s=1.2, text_heard="Your appointment is "), UPSTREAM)
    await sink.emit(BotStoppedSpeakingFrame(turn_id=3, interrupted=True), UPSTREAM)
    answer = node.conversation.messages[-1]
    assert answer.content == "Your appointment is" and answer.interrupted
    await session.cancel()
    await task


async def test_answer_interrupted_before_any_audio_leaves_no_assistant_message() -> None:
    async def hook(conv, user):  # type: ignore[no-untyped-def]
        yield "Let me "
        await asyncio.sleep(5)
        yield "check."

    node = LLMNode(hook)
    session, task, sink = await run_llm(node)
    await session.push(UserTurnFrame(text="balance?", turn_id=4))
    await asyncio.sleep(0.05)
    await session.push(InterruptFrame())
    await asyncio.sleep(0.01)
    assert [m.role for m in node.conversation.messages] == ["user"]
    assert not sink.of(LLMTurnEndFrame)  # generation was cancelled
    await session.cancel()
    await task


async def test_failing_hook_gets_a_spoken_apology_and_the_call_continues() -> None:
    async def hook(conv, user):  # type: ignore[no-untyped-def]
        if user.text == "crash":
            raise TimeoutError("upstream LLM timed out")
        yield "fine"

    node = LLMNode(hook, apology="Sorry, say that again?")
    session, task, sink = await run_llm(node)
    errors: list[ErrorFrame] = []
    session.subscribe(lambda f, d: errors.append(f) if isinstance(f, ErrorFrame) else None)
    await session.push(UserTurnFrame(text="crash", turn_id=1))
    await asyncio.sleep(0.05)
    await session.push(UserTurnFrame(text="again", turn_id=2))
    await asyncio.sleep(0.05)
    assert [f.text for f in sink.of(LLMTextFrame)] == ["Sorry, say that again?", "fine"]
    assert errors and "timed out" in errors[0].message and not errors[0].fatal
    assert not task.done()
    await session.cancel()
    await task


@pytest.mark.parametrize("silent", ["before_the_first_token", "between_tokens"])
async def test_a_hook_that_goes_quiet_is_cut_off_with_an_apology(silent: str) -> None:
    closed: list[int] = []

    async def hook(conv, user):  # type: ignore[no-untyped-def]
        try:
            if user.turn_id == 1:
                if silent == "between_tokens":
                    yield "Let me check that for you."
                await asyncio.Event().wait()  # a model that never answers (or hangs mid-answer)
            yield "fine"
        finally:
            closed.append(user.turn_id)  # the hook's stream was closed, not left running

    node = LLMNode(hook, apology="Sorry, say that again?", first_token_timeout_s=0.3, stall_timeout_s=0.3)
    session, task, sink = await run_llm(node)
    errors: list[ErrorFrame] = []
    session.subscribe(lambda f, d: errors.append(f) if isinstance(f, ErrorFrame) else None)
    await session.push(UserTurnFrame(text="when are you open?", turn_id=1))
    await asyncio.sleep(0.2)
    assert not sink.of(LLMTurnEndFrame)  # still within the limit: no apology yet
    await asyncio.sleep(0.25)
    texts = [f.text for f in sink.of(LLMTextFrame)]
    said = "Let me check that for you. Sorry, say that again?"
    assert "".join(texts) == (said if silent == "between_tokens" else "Sorry, say that again?")
    assert sink.of(LLMTurnEndFrame)[0].turn_id == 1 and closed == [1]
    expected = "no first token" if silent == "before_the_first_token" else "no further token"
    assert errors and errors[0].message == f"LLM failed: {expected} from the hook within 0.3 s"
    assert not errors[0].fatal
    assert node.conversation.messages[-1].content == "".join(texts)
    await session.push(UserTurnFrame(text="again", turn_id=2))  # the call goes on
    await asyncio.sleep(0.05)
    assert [f.text for f in sink.of(LLMTextFrame)][-1] == "fine" and not task.done()
    await session.cancel()
    await task


async def test_dtmf_reaches_the_hook_as_user_input() -> None:
    seen = []

    def hook(conv, user):  # type: ignore[no-untyped-def]
        seen.append(user.dtmf)
        return f"You pressed {user.dtmf}."

    session, task, sink = await run_llm(LLMNode(hook))
    await session.push(DTMFFrame(digit="2"))
    await asyncio.sleep(0.05)
    assert seen == ["2"] and sink.of(LLMTurnEndFrame)[0].text == "You pressed 2."
    await session.cancel()
    await task


async def test_openai_client_streams_calls_tools_and_retries() -> None:
    def reply(messages):  # type: ignore[no-untyped-def]
        if messages[-1]["role"] == "tool":
            status = json.loads(messages[-1]["content"])["status"]
            return [{"role": "assistant", "content": "Order 42 "}, {"content": f"is {status}."}]
        return [
            {"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                  "function": {"name": "order_status", "arguments": ""}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"order_id": '}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": "42}"}}]},
        ]

    emulator = ChatEmulator(reply, fail_first=1)
    url = await emulator.start()
    lookups = []

    async def order_status(order_id: int) -> dict:
        lookups.append(order_id)
        return {"status": "shipped"}

    tool = Tool("order_status", "Look up an order", order_status,
                {"type": "object", "properties": {"order_id": {"type": "integer"}}})
    llm = OpenAICompatibleLLM(url, "test-model", "sk-test", tools=[tool])
    conv = Conversation(system_prompt="support agent")
    conv.add_user("where is order 42", 1)
    text = "".join([d async for d in llm(conv, UserInput("where is order 42", 1))])
    assert text == "Order 42 is shipped."
    assert lookups == [42]
    assert len(emulator.requests) == 3  # one refused with 503 and retried, then the tool round trip
    assert emulator.requests[-1]["messages"][0] == {"role": "system", "content": "support agent"}
    assert emulator.requests[0]["tools"][0]["function"]["name"] == "order_status"
    await llm.aclose()
    await emulator.close()


async def test_openai_client_reports_server_errors_clearly() -> None:
    emulator = ChatEmulator(lambda m: [], fail_first=10)
    url = await emulator.start()
    llm = OpenAICompatibleLLM(url, "m", retries=1)
    with pytest.raises(LLMError, match="503.*overloaded"):
        async for _ in llm(Conversation(), UserInput("hi")):
            pass
    await llm.aclose()
    await emulator.close()
