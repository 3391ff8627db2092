"""The contracts the bad-input suite and the atheris fuzzer hold the parsers to.

One function per parser: feed it any input, it parses the way the transport
does and asserts what must then hold. Only the parser's own error type may be
raised (anything else propagates and fails the test or is a fuzzer crash); an
accepted input must be usable by everything that reads it next.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from transports.rtp import packet
from transports.sip import message as sipmsg
from transports.sip import sdp
from transports.telephony.serializers import CarrierSerializer, ProtocolError
from transports.telephony.serializers.base import (
    MAX_REASON_BYTES,
    Cleared,
    DigitIn,
    MarkAck,
    MediaIn,
    StreamStart,
    StreamStop,
)

CORPUS = Path(__file__).parent / "corpus" / "sip"
EXPECT: dict[str, dict] = json.loads((CORPUS / "expect.json").read_text())


def load(name: str) -> bytes:
    """A corpus file as it goes on the wire: CRLF line ends, real Content-Length."""
    data = (CORPUS / name).read_bytes().replace(b"\n", b"\r\n")
    if b"{{CL}}" in data:
        body = data.split(b"\r\n\r\n", 1)[1]
        data = data.replace(b"{{CL}}", str(len(body)).encode())
    return data


VALID = [load(n) for n in sorted(EXPECT) if EXPECT[n]["ok"] and b"SIP/2.0\r\n" in load(n)[:400]]
VALID_REQUESTS = [m for m in VALID if not m.startswith(b"SIP/")]


def answerable(partial: sipmsg.SipMessage | None) -> bool:
    """What the UA requires before it answers a malformed request (useragent._malformed)."""
    return bool(
        partial is not None and partial.is_request and partial.method != "ACK"
        and partial.get("Via") and partial.get("CSeq") and partial.get("Call-ID")
    )


def sip_outcome(data: bytes) -> str:
    """Parse like the UA does and check the contract; returns 'accepted' or 'rejected'."""
    try:
        msg = sipmsg.parse(data)
    except sipmsg.SipParseError as exc:
        assert exc.reason and exc.status in (400, 505)
        if answerable(exc.partial):
            assert exc.partial is not None
            reason = "Bad Request (" + exc.reason.replace("\r", " ").replace("\n", " ")[:120] + ")"
            sipmsg.make_response(exc.partial, exc.status, reason).serialize()
        return "rejected"
    # Accepted: everything the UA reads next must work without raising.
    assert isinstance(msg.call_id, str) and msg.cseq[0] >= 0
    _ = (msg.branch, msg.from_tag, msg.to_tag, str(msg))
    if msg.is_request:
        response = sipmsg.make_response(msg, 200, to_tag="t1", body=b"x")
        again = sipmsg.parse(response.serialize())
        assert again.status == 200 and again.call_id == msg.call_id and again.cseq == msg.cseq
        assert again.get_all("Via") == msg.get_all("Via") and again.to_tag
    return "accepted"


def sdp_outcome(text: str) -> str:
    try:
        offer = sdp.parse(text)
        picked = sdp.negotiate(offer)
    except sdp.SdpError as exc:
        assert str(exc)
        return "rejected"
    if picked is None:
        return "no codec"
    index, agreed = picked
    ipaddress.ip_address(agreed.remote_host)
    assert 0 < agreed.remote_port <= 65535 and 0 <= agreed.payload_type <= 127
    assert agreed.codec in ("PCMU", "PCMA") and 10 <= agreed.ptime <= 200
    answer = sdp.build_answer(offer, index, agreed, local_ip="127.0.0.1", local_port=7000, session_id=1, version=1)
    again = sdp.read_answer(sdp.parse(answer))
    assert (again.codec, again.payload_type) == (agreed.codec, agreed.payload_type)
    return "accepted"


def rtp_outcome(data: bytes) -> None:
    try:
        pkt = packet.parse(data)
    except packet.RtpError as exc:
        assert str(exc)
        return
    assert len(pkt.payload) <= len(data) - packet.HEADER_SIZE and 0 <= pkt.payload_type <= 127
    assert packet.parse(pkt.serialize()).payload == pkt.payload


# ------------------------------------------------------------ carrier streams

#: A valid start message per carrier, so fuzzed media messages get past the start.
CARRIER_STARTS: dict[str, str] = {
    "twilio": json.dumps({"event": "start", "start": {
        "streamSid": "MZ1", "callSid": "CA1", "customParameters": {"From": "+15550100"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}),
    "telnyx": json.dumps({"event": "start", "stream_id": "st1", "start": {
        "call_control_id": "v3:cc1", "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}}}),
    "vonage": json.dumps({"event": "websocket:connected", "content-type": "audio/l16;rate=16000", "uuid": "u1"}),
    "plivo": json.dumps({"event": "start", "start": {
        "streamId": "s1", "callId": "c1", "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}}),
    "exotel": json.dumps({"event": "start", "stream_sid": "s1", "start": {
        "stream_sid": "s1", "call_sid": "c1", "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000"}}}),
}
CLOSE_CODES = {1002, 1003, 1007, 1008, 1009}


def carrier_outcome(serializer: CarrierSerializer, data: str | bytes) -> str:
    """One WebSocket message through a serializer: typed events, or a close code and reason."""
    try:
        events = serializer.parse(data)
    except ProtocolError as exc:
        assert exc.reason and len(exc.reason.encode()) <= MAX_REASON_BYTES and exc.close_code in CLOSE_CODES
        return "closed"
    assert isinstance(events, list)
    for event in events:
        if isinstance(event, MediaIn):
            assert isinstance(event.pcm, bytes) and len(event.pcm) % 2 == 0
        elif isinstance(event, StreamStart):
            assert event.sample_rate in (8000, 16000, 24000) and event.encoding in ("mulaw", "alaw", "l16")
            assert all(isinstance(v, str) for v in (event.stream_id, event.call_id, *event.parameters.values()))
        elif isinstance(event, (DigitIn, MarkAck)):
            assert isinstance(event.digit if isinstance(event, DigitIn) else event.name, str)
        else:
            assert isinstance(event, (Cleared, StreamStop))
    return "accepted"
