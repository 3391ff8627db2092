"""Bad input at the application protocols: carrier media streams, MQTT commands, WebRTC offers.

Carrier WebSocket JSON for all five serializers (missing fields, wrong types,
oversized or invalid base64, wrong sample rates and channel counts, deep
nesting, numbers too long to convert) must end in a ``ProtocolError`` whose
close code is a protocol one and whose reason fits a close frame. MQTT
commands end in a ``CommandError`` (the bus publishes it as an ``error``
event). WebRTC offers end in an HTTP 400/413 with a JSON reason from a real
signaling server — never a 500, and never a call left behind.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from hypothesis import given
from hypothesis import strategies as st

from agent.calls import CallManager
from tests.reliability.conftest import TALLY, fuzz_settings
from tests.reliability.contracts import CARRIER_STARTS, carrier_outcome
from transports.mqtt.schema import COMMANDS, CommandError, parse_command
from transports.telephony.serializers import SERIALIZERS, ProtocolError
from transports.telephony.serializers.base import MAX_BASE64_CHARS, MAX_REASON_BYTES
from transports.webrtc import WebRTCServer, serve_webrtc
from transports.webrtc.server import sdp_offer_problem

DEEP = "[" * 100_000 + "]" * 100_000
LONG_INT = "9" * 5000  # json.loads raises ValueError (int digits limit), not JSONDecodeError
MEDIA = {
    "twilio": lambda payload: {"event": "media", "media": {"payload": payload}},
    "telnyx": lambda payload: {"event": "media", "media": {"payload": payload}},
    "plivo": lambda payload: {"event": "media", "media": {"payload": payload}},
    "exotel": lambda payload: {"event": "media", "media": {"payload": payload}},
}


def started(name: str):  # type: ignore[no-untyped-def]
    serializer = SERIALIZERS[name]()
    assert carrier_outcome(serializer, CARRIER_STARTS[name]) == "accepted"
    return serializer


def replace(path: tuple[str, ...], value: object, name: str) -> str:
    """The carrier's valid start message with one field replaced (or removed, for ...)."""
    message = json.loads(CARRIER_STARTS[name])
    target = message
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(message)


START_CASES: dict[str, list[tuple[str, str, int]]] = {
    "twilio": [
        (replace(("start", "streamSid"), ..., "twilio"), "without start.streamSid", 1008),
        (replace(("start", "streamSid"), 7, "twilio"), "start.streamSid should be str", 1008),
        (replace(("start", "mediaFormat", "sampleRate"), 16000, "twilio"), "unsupported sample rate 16000", 1008),
        (replace(("start", "mediaFormat", "channels"), 2, "twilio"), "unsupported channel count 2", 1008),
        (replace(("start", "mediaFormat", "encoding"), "audio/x-l16", "twilio"), "unsupported media encoding", 1008),
        (replace(("start", "customParameters"), [1, 2], "twilio"), "", 0),  # ignored, not fatal
        (replace(("start",), "a string", "twilio"), "without start.streamSid", 1008),
    ],
    "telnyx": [
        (replace(("stream_id",), ..., "telnyx"), "without stream_id", 1008),
        (replace(("start", "media_format", "encoding"), "OPUS", "telnyx"), "unsupported media encoding", 1008),
        (replace(("start", "media_format", "sample_rate"), 16000, "telnyx"), "unsupported sample rate", 1008),
        (replace(("start", "media_format", "sample_rate"), True, "telnyx"), "sample_rate should be int", 1008),
    ],
    "vonage": [
        (replace(("content-type",), "audio/l16;rate=44100", "vonage"), "unsupported content-type", 1008),
        (replace(("content-type",), ..., "vonage"), "without content-type", 1008),
    ],
    "plivo": [
        (replace(("start", "mediaFormat", "sampleRate"), 16000, "plivo"), "unsupported sample rate", 1008),
        (replace(("start", "callId"), None, "plivo"), "start.callId should be str", 1008),
    ],
    "exotel": [
        (replace(("start", "media_format", "sample_rate"), "11025", "exotel"), "unsupported sample rate 11025", 1008),
        (replace(("start", "media_format", "sample_rate"), "\u00b2", "exotel"), "should be int", 1008),
        (replace(("start", "media_format", "sample_rate"), ..., "exotel"), "without start.media_format.sample_rate",
         1008),
        (replace(("stream_sid",), {"x": 1}, "exotel"), "stream_sid should be str", 1008),
    ],
}


@pytest.mark.parametrize("name", sorted(SERIALIZERS))
def test_carrier_corpus(name: str, tally: Counter[str]) -> None:
    common: list[tuple[str | bytes, str, int]] = [
        ("{not json", "malformed JSON", 1007),
        ("[1, 2]", "not an object", 1007),
        (DEEP, "malformed JSON", 1007),
        ('{"event": ' + LONG_INT + "}", "malformed JSON", 1007),
        ('{"event": ' + json.dumps("x" * 10_000) + ', "start": 1}', "", -1),  # unknown event: ignored or refused
        ('{"no_event": 1}', "without event", 1008),
        ('{"event": {"nested": "object"}}', "event should be str", 1008),
    ]
    for message, reason, code in [*common, *START_CASES.get(name, [])]:
        serializer = SERIALIZERS[name]()
        outcome = carrier_outcome(serializer, message)
        tally["carrier corpus"] += 1
        if code == -1:
            continue
        if code == 0:
            assert outcome == "accepted", message[:80]
            continue
        with pytest.raises(ProtocolError) as info:
            SERIALIZERS[name]().parse(message)
        assert reason in info.value.reason and info.value.close_code == code, (message[:80], info.value.reason)
        assert len(info.value.reason.encode()) <= MAX_REASON_BYTES


@pytest.mark.parametrize("name", sorted(MEDIA))
def test_carrier_media_corpus(name: str, tally: Counter[str]) -> None:
    media = MEDIA[name]
    cases = [
        (media("A" * (MAX_BASE64_CHARS + 4)), "exceeds", 1009),
        (media("not base64!"), "not valid base64", 1007),
        (media("QU=J"), "not valid base64", 1007),
        (media("QUJ"), "not valid base64", 1007),
        (media(12345), "media.payload should be str", 1008),
        ({"event": "media", "media": ["payload"]}, "", 1008),
        ({"event": "media"}, "without media.payload", 1008),
    ]
    if name == "exotel":
        cases.append((media(base64.b64encode(b"\x01\x02\x03").decode()), "odd-length", 1008))
    before_start = SERIALIZERS[name]()
    with pytest.raises(ProtocolError, match="before the stream's start"):
        before_start.parse(json.dumps(media(base64.b64encode(b"\0" * 160).decode())))
    for message, reason, code in cases:
        with pytest.raises(ProtocolError) as info:
            started(name).parse(json.dumps(message))
        assert reason in info.value.reason and info.value.close_code == code, (str(message)[:80], info.value.reason)
        tally["carrier corpus"] += 1


def test_vonage_binary_frames(tally: Counter[str]) -> None:
    with pytest.raises(ProtocolError, match="before the stream's start"):
        SERIALIZERS["vonage"]().parse(b"\0" * 640)
    with pytest.raises(ProtocolError, match="odd-length"):
        started("vonage").parse(b"\0" * 641)
    with pytest.raises(ProtocolError, match="exceeds") as info:
        started("vonage").parse(b"\0" * 64_002)
    assert info.value.close_code == 1009
    with pytest.raises(ProtocolError, match="binary message where JSON"):
        started("twilio").parse(b'{"event": "media"}')
    tally["carrier corpus"] += 4


def test_a_reason_never_breaks_the_close_frame() -> None:
    """Every reason fits a close frame (125 bytes with the code), cut on a character boundary."""
    for reason in ("\u00e9" * 200, "x" * 119 + "\u00e9", "\U0001f600" * 40):
        fitted = ProtocolError(reason).reason.encode()
        assert len(fitted) <= MAX_REASON_BYTES
        fitted.decode("utf-8")  # whole characters only


_KEYS = st.sampled_from(["event", "start", "media", "payload", "streamSid", "callSid", "mediaFormat", "encoding",
                         "sampleRate", "sample_rate", "channels", "stream_id", "stream_sid", "call_sid", "callId",
                         "streamId", "call_control_id", "media_format", "customParameters", "custom_parameters",
                         "track", "dtmf", "digit", "mark", "name", "content-type", "uuid", "extra_headers"])
_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True), st.text(max_size=12),
              st.sampled_from(["start", "media", "dtmf", "mark", "stop", "connected", "clearedAudio", "playedStream",
                               "websocket:connected", "websocket:dtmf", "websocket:notify", "audio/x-mulaw", "PCMU",
                               "PCMA", "audio/x-raw", "audio/l16;rate=16000", "8000", "16000", "inbound", "AAAA",
                               "\u00b2"])),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(_KEYS, children, max_size=5)),
    max_leaves=15,
)
_MESSAGES = st.dictionaries(_KEYS, _VALUES, max_size=6)


def _paths(value: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if not isinstance(value, dict):
        return []
    found = []
    for key, child in value.items():
        found.append((*prefix, key))
        found += _paths(child, (*prefix, key))
    return found


@st.composite
def mutated_messages(draw: st.DrawFn, name: str) -> str:
    """A valid start or media message of ``name`` with up to three fields replaced or removed."""
    media = {"event": "media", "media": {"payload": "AAAA", "track": "inbound"}}
    message = json.loads(draw(st.sampled_from([CARRIER_STARTS[name], json.dumps(media)])))
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths(message)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        target = message
        for key in path[:-1]:
            target = target[key]
        if draw(st.booleans()):
            target[path[-1]] = draw(_VALUES)
        else:
            del target[path[-1]]
    return json.dumps(message)


@fuzz_settings(2.0)
@given(st.data())
def test_carrier_mutated_messages_property(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(SERIALIZERS)))
    serializer = SERIALIZERS[name]()
    for message in data.draw(st.lists(mutated_messages(name), min_size=1, max_size=4)):
        TALLY["carrier mutated messages"] += 1
        carrier_outcome(serializer, message)


@fuzz_settings(1.0)
@given(st.sampled_from(sorted(SERIALIZERS)), st.booleans(), st.lists(st.one_of(
    _MESSAGES.map(json.dumps), st.text(max_size=60), st.binary(max_size=60)), min_size=1, max_size=6))
def test_carrier_messages_property(name: str, start_first: bool, messages: list[str | bytes]) -> None:
    serializer = SERIALIZERS[name]()
    if start_first:
        carrier_outcome(serializer, CARRIER_STARTS[name])
    for message in messages:
        TALLY["carrier random messages"] += 1
        carrier_outcome(serializer, message)


# ------------------------------------------------------------------------ MQTT


def mqtt_outcome(payload: bytes) -> str:
    try:
        command = parse_command(payload)
    except CommandError as exc:
        assert exc.reason and len(exc.reason) < 400
        return "refused"
    assert command.name in COMMANDS and set(command.args) <= set(COMMANDS[command.name])
    return "accepted"


def test_mqtt_command_corpus(tally: Counter[str]) -> None:
    cases = {
        ("[" * 30_000 + "]" * 30_000).encode(): "not valid UTF-8 JSON",  # nesting: RecursionError
        ('{"v": 1, "command": "say", "text": ' + LONG_INT + "}").encode(): "not valid UTF-8 JSON",
        b"\xff\xfe": "not valid UTF-8 JSON",
        b'{"v": 1, "command": "say", "text": "hi", "extra": 1}': "unknown field(s) ['extra']",
        b'{"v": 2, "command": "say", "text": "hi"}': "unsupported schema version 2",
        b'{"v": 1, "command": "say", "text": "hi", "id": "' + b"i" * 200 + b'"}': "'id' must be a string",
        b" " * (64 * 1024 + 1): "the limit is",
        b'{"v": 1, "command": "dance"}': "unknown command 'dance'",
        b'{"v": 1, "command": "llm_config"}': "give 'system_prompt', 'tools' or both",
    }
    for payload, reason in cases.items():
        with pytest.raises(CommandError) as info:
            parse_command(payload)
        assert reason in info.value.reason, info.value.reason
        tally["mqtt corpus"] += 1


_COMMAND_BODIES = st.dictionaries(
    st.sampled_from(["v", "command", "id", "text", "uninterruptible", "reason", "target", "system_prompt", "tools",
                     "x"]),
    st.one_of(_VALUES, st.sampled_from(list(COMMANDS)), st.just(1)), max_size=5)


@fuzz_settings(2.0)
@given(st.one_of(_COMMAND_BODIES.map(lambda b: json.dumps(b).encode()), st.binary(max_size=100)))
def test_mqtt_commands_property(payload: bytes) -> None:
    TALLY["mqtt random commands"] += 1
    mqtt_outcome(payload)


# ---------------------------------------------------------------------- WebRTC


@fuzz_settings(2.0)
@given(st.text(max_size=400))
def test_offer_check_never_raises(sdp: str) -> None:
    TALLY["webrtc offer check"] += 1
    problem = sdp_offer_problem(sdp)
    assert problem is None or isinstance(problem, str)


@contextlib.asynccontextmanager
async def signaling() -> AsyncIterator[tuple[WebRTCServer, CallManager, aiohttp.ClientSession]]:
    manager = CallManager(lambda info: [])
    server = await serve_webrtc(manager, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http:
            yield server, manager, http
    finally:
        await server.close()
        await manager.close()


async def real_offer() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio")
    pc.createDataChannel("events")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def mutate_offer(sdp: str, rng: random.Random) -> str:
    """A real offer with a few lines broken: values swapped, lines dropped, cut, doubled or garbled."""
    lines = sdp.split("\r\n")
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(lines))
        op = rng.choice(["drop", "dup", "swap", "cut", "garble", "number"])
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "cut":
            lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
        elif op == "garble":
            chars = list(lines[i])
            for _ in range(rng.randint(1, 3)):
                if chars:
                    chars[rng.randrange(len(chars))] = rng.choice(" :=/\x00\u00e9x9-")
            lines[i] = "".join(chars)
        else:
            lines[i] = " ".join(str(rng.choice([-1, 0, 65536, 2**40, 128])) if w.isdigit() else w
                                for w in lines[i].split(" "))
        if not lines:
            lines = [""]
    return "\r\n".join(lines)


@pytest.mark.asyncio
async def test_mutated_offers_get_a_4xx_from_a_real_server_and_leave_nothing(tally: Counter[str]) -> None:
    """Real aiortc offers, broken line by line, posted to a real server: 200 or 4xx, never 5xx."""
    offer = await real_offer()
    rng = random.Random(20240610)
    statuses: Counter[int] = Counter()
    async with signaling() as (server, manager, http):
        bodies: list[bytes] = [json.dumps({"type": "offer", "sdp": mutate_offer(offer, rng)}).encode()
                               for _ in range(150)]
        bodies += [DEEP.encode(), b'{"type": "offer", "sdp": ' + LONG_INT.encode() + b"}", b"\xff" * 10,
                   json.dumps({"type": "offer", "sdp": offer.replace("m=audio", "m=video")}).encode(),
                   json.dumps({"type": "offer", "sdp": "v=0\r\n\x00\r\nm=audio 9 x 0\r\n"}).encode()]
        for body in bodies:
            async with http.post(server.url + "offer", data=body) as response:
                statuses[response.status] += 1
                text = await response.text()
                assert response.status in (200, 400, 413), (response.status, text, body[:200])
                if response.status == 400:
                    assert json.loads(text)["error"]
                if response.status == 200:  # a harmless mutation: hang the call up again
                    await server.calls[json.loads(text)["session_id"]].close("test")
            tally["webrtc offers posted"] += 1
        assert not server.calls and not manager.sessions
    assert statuses[400] > 60 and statuses[200] > 10  # both paths ran: refusals and harmless mutations
