"""Telnyx, Vonage, Plivo and Exotel through the media server, with doc-shaped messages.

Each carrier's client below speaks that carrier's documented wire format:
it starts a stream, sends caller audio and a digit, plays back what the
server sends (acknowledging marks the carrier's way) and barges in. The
same scripted bot runs behind every carrier.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import numpy as np
import pytest

from agent.audio import resample, ulaw_decode, ulaw_encode
from agent.calls import CallInfo
from agent.frames import BotStoppedSpeakingFrame
from tests.telephony.bots import TalkerBot
from tests.telephony.helpers import best_correlation, speech_8k, windowed_match
from tests.telephony.webhook_client import ask, start_with
from transports.telephony.server import CarrierServer
from transports.telephony.serializers import SERIALIZERS, ProtocolError


@dataclass
class Wire:
    """How one carrier says things on the socket."""

    rate: int
    chunk_ms: int
    start: Callable[[], list[str]]
    media: Callable[[np.ndarray], str | bytes]  # caller pcm at ``rate``
    dtmf: Callable[[str], str]
    # server message → ("audio", pcm bytes at rate) | ("mark", name) | ("clear", "")
    read: Callable[[str | bytes], tuple[str, object]]
    ack: Callable[[str], str]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _json_read(media_event: str, payload: Callable[[dict], str], decode: Callable[[bytes], bytes],
               mark_event: str, mark_name: Callable[[dict], str], clear_event: str):  # type: ignore[no-untyped-def]
    def read(raw: str | bytes) -> tuple[str, object]:
        message = json.loads(raw)
        event = message.get("event") or message.get("action")
        if event == media_event:
            return "audio", decode(base64.b64decode(payload(message)))
        if event == mark_event:
            return "mark", mark_name(message)
        if event == clear_event:
            return "clear", ""
        return "other", message

    return read


WIRES = {
    "telnyx": Wire(
        8000, 20,
        lambda: [json.dumps({"event": "connected", "version": "1.0.0"}),
                 json.dumps({"event": "start", "sequence_number": "1", "stream_id": "32DE0DEA", "start": {
                     "user_id": "u1", "call_control_id": "v3:cc-1", "client_state": "",
                     "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}}})],
        lambda pcm: json.dumps({"event": "media", "stream_id": "32DE0DEA", "media": {
            "track": "inbound", "chunk": "1", "timestamp": "20", "payload": _b64(ulaw_encode(pcm))}}),
        lambda d: json.dumps({"event": "dtmf", "stream_id": "32DE0DEA", "dtmf": {"digit": d}}),
        _json_read("media", lambda m: m["media"]["payload"], ulaw_decode, "mark",
                   lambda m: m["mark"]["name"], "clear"),
        lambda name: json.dumps({"event": "mark", "stream_id": "32DE0DEA", "mark": {"name": name}}),
    ),
    "plivo": Wire(
        8000, 20,
        lambda: [json.dumps({"event": "start", "sequenceNumber": 1, "start": {
            "callId": "c-1", "streamId": "s-1", "accountId": "MA1", "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}, "extra_headers": "plan=gold"})],
        lambda pcm: json.dumps({"event": "media", "sequenceNumber": 2, "streamId": "s-1", "media": {
            "track": "inbound", "timestamp": "1", "chunk": 1, "payload": _b64(ulaw_encode(pcm))}}),
        lambda d: json.dumps({"event": "dtmf", "streamId": "s-1", "dtmf": {"track": "inbound", "digit": d}}),
        _json_read("playAudio", lambda m: m["media"]["payload"], ulaw_decode, "checkpoint",
                   lambda m: m["name"], "clearAudio"),
        lambda name: json.dumps({"event": "playedStream", "streamId": "s-1", "name": name}),
    ),
    "exotel": Wire(
        8000, 100,
        lambda: [json.dumps({"event": "connected"}),
                 json.dumps({"event": "start", "sequence_number": "1", "stream_sid": "MZ1", "start": {
                     "stream_sid": "MZ1", "call_sid": "CA1", "account_sid": "AC1", "from": "+919876543210",
                     "to": "+918047491899", "custom_parameters": {"key1": "v"},
                     "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"}}})],
        lambda pcm: json.dumps({"event": "media", "sequence_number": "3", "stream_sid": "MZ1",
                                "media": {"chunk": "2", "timestamp": "200", "payload": _b64(pcm.tobytes())}}),
        lambda d: json.dumps({"event": "dtmf", "stream_sid": "MZ1", "dtmf": {"digit": d, "duration": "100"}}),
        _json_read("media", lambda m: m["media"]["payload"], lambda b: b, "mark",
                   lambda m: m["mark"]["name"], "clear"),
        lambda name: json.dumps({"event": "mark", "stream_sid": "MZ1", "mark": {"name": name}}),
    ),
    "vonage": Wire(
        16000, 20,
        lambda: [json.dumps({"event": "websocket:connected", "content-type": "audio/l16;rate=16000",
                             "uuid": "call-uuid-1", "from": "447700900000"})],
        lambda pcm: pcm.tobytes(),
        lambda d: json.dumps({"event": "websocket:dtmf", "digit": d, "duration": 260}),
        lambda raw: ("audio", raw) if isinstance(raw, bytes) else (
            ("mark", json.loads(raw)["payload"]["mark"]) if json.loads(raw).get("action") == "notify"
            else ("clear", "") if json.loads(raw).get("action") == "clear" else ("other", raw)),
        lambda name: json.dumps({"event": "websocket:notify", "payload": {"mark": name}}),
    ),
}


#: The call id each wire's start message names (what the webhook is told, so the token binds to it).
CALL_IDS = {"telnyx": "", "plivo": "c-1", "exotel": "CA1", "vonage": "call-uuid-1"}


class CarrierClient:
    """Plays the carrier: streams caller audio, plays back bot audio, acks marks.

    ``params`` are what our webhook answer told the carrier to pass on (the
    stream token among them); they go into the first message, the carrier's way.
    """

    def __init__(self, wire: Wire, url: str, carrier: str = "", params: dict[str, str] | None = None) -> None:
        self.wire, self.url = wire, url
        self.carrier, self.params = carrier, params or {}
        self.audio = bytearray()
        self.clears: list[float] = []
        self.marks_acked = 0
        self._queue: list[tuple[str, object]] = []

    async def run(self, caller: np.ndarray, *, silence_before_s: float, digits: str = "") -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(self.url) as ws:
            tasks = [asyncio.create_task(self._receive(ws)), asyncio.create_task(self._playback(ws))]
            for message in self.wire.start():
                if json.loads(message).get("event") in ("start", "websocket:connected"):
                    message = start_with(self.carrier, message, self.params)
                await ws.send_str(message)
            samples = np.concatenate([np.zeros(int(silence_before_s * self.wire.rate), dtype=np.int16), caller,
                                      np.zeros(self.wire.rate // 2, dtype=np.int16)])
            step = self.wire.rate * self.wire.chunk_ms // 1000
            start = time.monotonic()
            for i in range(len(samples) // step):
                message = self.wire.media(samples[i * step : (i + 1) * step])
                await (ws.send_bytes(message) if isinstance(message, bytes) else ws.send_str(message))
                await asyncio.sleep(max(0.0, start + (i + 1) * step / self.wire.rate - time.monotonic()))
            for digit in digits:
                await ws.send_str(self.wire.dtmf(digit))
            await asyncio.sleep(0.3)
            for task in tasks:
                task.cancel()

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            kind, value = self.wire.read(message.data)
            if kind == "audio":
                self.audio += value  # type: ignore[operator]
                self._queue.append(("audio", len(value) / 2 / self.wire.rate))  # type: ignore[arg-type]
            elif kind == "mark":
                self._queue.append(("mark", value))
            elif kind == "clear":
                self.clears.append(time.monotonic())
                self._queue.clear()

    async def _playback(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            if not self._queue:
                await asyncio.sleep(0.005)
                continue
            kind, value = self._queue.pop(0)
            if kind == "audio":
                await asyncio.sleep(float(value))  # type: ignore[arg-type]
            else:
                self.marks_acked += 1
                await ws.send_str(self.wire.ack(str(value)))


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, np.ndarray]:
    return speech_8k("Thanks for calling. Your order has shipped and will arrive on Friday."), \
        speech_8k("Stop, stop, I have a question.")


@pytest.mark.asyncio
@pytest.mark.parametrize("carrier", ["telnyx", "plivo", "exotel", "vonage"])
async def test_carrier_call_audio_digits_marks_and_barge_in(carrier: str, speech) -> None:  # type: ignore[no-untyped-def]
    bot_audio, caller = speech
    wire = WIRES[carrier]
    bots: list[TalkerBot] = []
    infos: list[CallInfo] = []

    def bot(info: CallInfo) -> list[TalkerBot]:
        infos.append(info)
        bots.append(TalkerBot([(bot_audio, "Thanks for calling. ")]))
        return [bots[-1]]

    server = CarrierServer(bot, carriers=[carrier], host="127.0.0.1", port=0)
    await server.start()
    # As the carrier does: ask our webhook, connect where it says, pass on what it says.
    answer = await ask(f"http://127.0.0.1:{server.port}", carrier, call_id=CALL_IDS[carrier])
    assert answer.status == 200 and answer.url.startswith(f"ws://127.0.0.1:{server.port}/{carrier}/media")
    client = CarrierClient(wire, answer.url, carrier, answer.params)
    caller_at_rate = caller if wire.rate == 8000 else resample(caller.astype(np.float32) / 32768, 8000, wire.rate)
    if caller_at_rate.dtype != np.int16:
        caller_at_rate = np.clip(caller_at_rate * 32767, -32768, 32767).astype(np.int16)
    try:
        await client.run(caller_at_rate, silence_before_s=1.5, digits="7*")
    finally:
        await server.stop()
    bot = bots[0]
    assert bot.digits == ["7", "*"]
    assert client.marks_acked > 0 and len(client.clears) == 1
    stopped = bot.of_type(BotStoppedSpeakingFrame)
    assert stopped and stopped[-1][1].interrupted
    heard = bot.progress()[-1]
    assert 1.2 < heard.played_s < 2.6 and heard.text_heard == "Thanks for calling. "
    # What the "phone" got is the bot's audio, cut short by the clear.
    got = np.frombuffer(bytes(client.audio), dtype=np.int16)
    got8k = got if wire.rate == 8000 else resample(got.astype(np.float32) / 32768, wire.rate, 8000)
    head = bot_audio[4000:12000]
    assert best_correlation(head, np.asarray(got8k, dtype=np.float64))[0] > 0.95
    assert len(got8k) < len(bot_audio) - 8000
    assert len(infos) == 1 and "voxwire_token" not in infos[0].metadata, "the token leaked into the metadata"
    # And the bot heard the caller.
    heard_audio = resample(np.concatenate(bot.heard).astype(np.float32) / 32768, 16000, 8000)
    assert windowed_match(caller, heard_audio) > 0.85


@pytest.mark.parametrize("carrier, message, reason", [
    ("telnyx", '{"event": "start", "stream_id": "x", "start": {"media_format": {"encoding": "OPUS"},'
               ' "call_control_id": "c"}}', "unsupported media encoding"),
    ("plivo", '{"event": "media", "media": {"payload": "AAAA"}}', "media before the stream's start"),
    ("exotel", '{"event": "start", "stream_sid": "s", "start": {"call_sid": "c", '
               '"media_format": {"sample_rate": "44100"}}}', "unsupported sample rate"),
    ("vonage", b"\x00\x01\x02", "media before the stream's start"),
    ("vonage", '{"event": "websocket:connected", "content-type": "audio/x-mulaw"}', "unsupported content-type"),
    ("twilio", "[1, 2, 3]", "not an object"),
    ("telnyx", '{"event": "error", "payload": {"code": 100003}}', "carrier reported an error"),
])
def test_serializers_reject_bad_messages(carrier: str, message: str | bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason) as info:
        SERIALIZERS[carrier]().parse(message)
    assert 1000 < info.value.close_code < 1012


def test_outbound_messages_follow_each_carriers_format() -> None:
    pcm = (np.arange(160, dtype=np.int16) * 50).tobytes()
    twilio = SERIALIZERS["twilio"]()
    twilio.stream_id = "MZ9"
    assert json.loads(twilio.clear()) == {"event": "clear", "streamSid": "MZ9"}
    assert json.loads(twilio.mark("m1")) == {"event": "mark", "streamSid": "MZ9", "mark": {"name": "m1"}}
    plivo = SERIALIZERS["plivo"]()
    plivo.stream_id = "s-1"
    played = json.loads(plivo.media(pcm))
    assert played["event"] == "playAudio" and played["media"]["contentType"] == "audio/x-mulaw"
    assert json.loads(plivo.dtmf("5")) == {"event": "sendDTMF", "dtmf": "5"}
    vonage = SERIALIZERS["vonage"]()
    assert vonage.media(pcm) == pcm and json.loads(vonage.clear()) == {"action": "clear"}
    exotel = SERIALIZERS["exotel"]()
    assert exotel.chunk_ms == 100 and base64.b64decode(json.loads(exotel.media(pcm))["media"]["payload"]) == pcm


@pytest.mark.asyncio
async def test_bot_audio_at_another_rate_reaches_the_carrier_to_its_last_millisecond() -> None:
    """24 kHz bot audio (Voxtral's rate) on an 8 kHz carrier: the resampler's held-back tail is sent too."""
    wire = WIRES["telnyx"]
    tone = (8000 * np.sin(np.arange(21600) * 2 * np.pi * 300 / 24000)).astype(np.int16)  # 0.9 s, loud to the end
    server = CarrierServer(lambda info: [TalkerBot([(tone, "Hello. ")], rate=24000)], carriers=["telnyx"],
                           host="127.0.0.1", port=0)
    await server.start()
    answer = await ask(f"http://127.0.0.1:{server.port}", "telnyx", call_id=CALL_IDS["telnyx"])
    client = CarrierClient(wire, answer.url, "telnyx", answer.params)
    try:
        await client.run(np.zeros(0, dtype=np.int16), silence_before_s=2.0)
    finally:
        await server.stop()
    got = np.frombuffer(bytes(client.audio), dtype=np.int16)
    loud = np.flatnonzero(np.abs(got) > 1000)
    assert len(got) == 7200, f"{len(got) / 8:.1f} ms of audio for a 900 ms utterance"
    assert loud[-1] >= len(got) - 8, f"the last {(len(got) - loud[-1]) / 8:.1f} ms were lost"
