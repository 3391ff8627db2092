"""Bad input on the telephony wire: SIP, SDP, RTP, RFC 4733 events, the jitter buffer.

Every parser has one contract: whatever arrives, it returns a well-formed
result or raises its own error type with a reason a person can act on (the
SIP UA turns it into ``400 Bad Request (reason)``). Nothing else may escape,
because an unexpected exception type is an unanswered INVITE, a dead media
task, or a log full of tracebacks. Three sources of inputs:

* a corpus (``corpus/sip``) of torture messages written from the categories of
  RFC 4475 — escaped and folded headers, long values, unknown schemes, missing
  or repeated headers, bad Content-Length, overlarge scalars, NUL and non-UTF-8
  bytes — each with the outcome it must have;
* hypothesis properties: raw bytes, and grammar-aware mutations of valid
  messages that reach far deeper than random bytes do;
* atheris, in ``test_fuzz_atheris.py``.
"""

from __future__ import annotations

import re
import time
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.reliability.conftest import fuzz_settings
from tests.reliability.helpers import UdpPeer, sip_request
from tests.reliability.contracts import (
    EXPECT,
    VALID_REQUESTS,
    answerable,
    load,
    rtp_outcome,
    sdp_outcome,
    sip_outcome,
)
from transports.rtp import dtmf, packet
from transports.rtp.jitter import MAX_CHUNKS, JitterBuffer
from transports.rtp.session import RtpSession
from transports.sip import message as sipmsg
from transports.sip import sdp
from transports.sip.transport import SipServer

# --------------------------------------------------------------------- corpus


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_sip_torture_corpus(name: str, tally: Counter[str]) -> None:
    expect, data = EXPECT[name], load(name)
    tally["sip corpus"] += 1
    if expect["ok"]:
        msg = sipmsg.parse(data)
        assert sip_outcome(data) == "accepted"
        for key in ("method", "call_id", "from_tag", "branch"):
            if key in expect:
                assert getattr(msg, key) == expect[key], key
        if "status" in expect:
            assert msg.status == expect["status"]
        if "cseq" in expect:
            assert list(msg.cseq) == expect["cseq"]
        if "vias" in expect:
            assert len(msg.get_all("Via")) == expect["vias"]
        if "body_len" in expect:
            assert len(msg.body) == expect["body_len"]
        return
    with pytest.raises(sipmsg.SipParseError) as info:
        sipmsg.parse(data)
    assert re.search(expect["match"], info.value.reason), info.value.reason
    assert answerable(info.value.partial) == expect["answerable"], info.value.reason
    assert info.value.status == expect.get("status", 400)
    sip_outcome(data)


def test_folded_whitespace_message_keeps_every_field() -> None:
    msg = sipmsg.parse(load("valid-whitespace-and-folding.sip"))
    assert msg.get("Max-Forwards") == "0068" and msg.get("NewFangledHeader") == "a new value that carries on here"
    assert [sipmsg.parse_via(v).params["branch"] for v in msg.get_all("Via")] == [
        "z9hG4bKwsfold1", "z9hG4bKrelay9", "z9hG4bKedge30"]
    assert sipmsg.parse_name_addr(msg.get("Contact") or "").params["q"] == "0.33"
    assert msg.body.startswith(b"v=0\r\n")


def test_a_second_message_in_one_datagram_is_ignored() -> None:
    msg = sipmsg.parse(load("valid-trailing-second-message.sip"))
    assert msg.method == "REGISTER" and msg.body == b"" and msg.call_id.startswith("dblreq.")


def test_oversized_and_header_flood_datagrams_are_refused(tally: Counter[str]) -> None:
    base = load("valid-compact-headers.sip")
    huge = base + b"x" * (sipmsg.MAX_MESSAGE_BYTES + 1 - len(base))
    with pytest.raises(sipmsg.SipParseError, match="exceeds"):
        sipmsg.parse(huge)
    head, body = base.split(b"\r\n\r\n", 1)
    flood = head + b"".join(b"\r\nX-Flood-%d: y" % i for i in range(250)) + b"\r\n\r\n" + body
    with pytest.raises(sipmsg.SipParseError, match="more than 200 header lines"):
        sipmsg.parse(flood)
    tally["sip corpus"] += 2


@pytest.mark.parametrize(
    "shape",
    [
        b"Subject: a\r\n" + b" b\r\n" * 20000,  # one header folded over 20 000 lines
        b"Via: SIP/2.0/UDP h;" + b";" * 60000 + b"\r\n",  # a parameter list of nothing
        b"To: " + b'"' * 60000 + b"\r\n",  # quotes that never balance
        b"From: <" + b"<" * 60000 + b"\r\n",  # brackets that never close
        b"Contact: " + b"<sip:a@b>," * 6000 + b"\r\n",  # thousands of entries
    ],
)
def test_worst_case_datagrams_parse_in_linear_time(shape: bytes) -> None:
    """A 64 KB datagram built to hit a quadratic path must not stall the event loop."""
    data = b"INVITE sip:a@b SIP/2.0\r\n" + shape + b"\r\n"
    data = data[: sipmsg.MAX_MESSAGE_BYTES - 4] + b"\r\n\r\n"
    started = time.perf_counter()
    sip_outcome(data)
    assert time.perf_counter() - started < 0.25


@pytest.mark.asyncio(loop_scope="session")
async def test_the_ua_answers_416_505_and_400_on_the_wire(tally: Counter[str]) -> None:
    """Real datagrams to a real SIP server: each problem gets the status RFC 3261 gives it."""
    cases = {  # Call-ID → (datagram, expected status, words in the reason phrase)
        "unkscm.nasdfasser0q239nwsdfasdkl34": (load("valid-unknown-scheme.sip"), 416, "Unsupported URI Scheme"),
        "novelsc.asdfasser0q239nwsdfasdkl34": (  # its own branch: the corpus reuses one
            load("valid-novel-scheme.sip").replace(b"z9hG4bKkdjuw39234", b"z9hG4bKnovel1"), 416,
            "Unsupported URI Scheme"),
        "badvers@192.0.2.15": (load("invalid-sip-version-7.sip"), 505, "Version Not Supported"),
        "v3-options": (sip_request("OPTIONS", "v3-options", version="SIP/3.0"), 505, "unsupported SIP version"),
        "mailto-invite": (sip_request("INVITE", "mailto-invite", uri="mailto:bot@example.com"), 416, "Unsupported"),
        "cseq-mismatch": (sip_request("OPTIONS", "cseq-mismatch").replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 BYE"),
                          400, "does not match"),
        "tel-options": (sip_request("OPTIONS", "tel-options", uri="tel:+15550100"), 200, "OK"),
    }
    server = SipServer(lambda info: [], host="127.0.0.1", port=0)
    await server.start()
    peer = await UdpPeer.open()
    try:
        for data, _, _ in cases.values():
            peer.send(data, server.port)
        replies = await peer.wait_for(len(cases))
        peer.send(load("valid-unknown-scheme.sip"), server.port)  # a retransmission: the same answer again
        again = (await peer.wait_for(len(cases) + 1))[len(cases):]
    finally:
        peer.close()
        await server.stop()
    tally["sip datagrams on the wire"] += len(cases) + 1
    got = {reply.call_id: reply for reply in replies}
    assert set(got) == set(cases), f"unanswered: {set(cases) - set(got)}"
    for call_id, (_, status, words) in cases.items():
        assert got[call_id].status == status and words in (got[call_id].reason or ""), (call_id, str(got[call_id]))
        if status == 416:
            assert got[call_id].to_tag, "a final response to a request outside a dialog carries a To tag"
    assert [r.status for r in again] == [416]


# ------------------------------------------------------------- SIP, hypothesis

_SIP_CHARS = st.sampled_from(list("abcAZ09 \t;:=,<>\"'\\@./%?[]+-_~*!`()") + ["\r\n", "\r\n ", "\x00", "\x7f", "é", "²"])


def sip_text(max_size: int) -> st.SearchStrategy[str]:
    return st.lists(_SIP_CHARS, max_size=max_size).map("".join)


_HEADERS = ["Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq", "Content-Length", "l", "Max-Forwards",
            "Contact", "m", "Date", "Content-Type", "Route", "X-Odd"]


@st.composite
def mutated_sip(draw: st.DrawFn) -> bytes:
    """A valid corpus request with a few grammar-aware edits."""
    data = draw(st.sampled_from(VALID_REQUESTS))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["header", "value", "drop", "dup", "bytes", "cut", "start"]))
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        index = draw(st.integers(0, len(lines) - 1))
        if op == "header":
            value = draw(sip_text(40))
            lines.insert(index + 1, f"{draw(st.sampled_from(_HEADERS))}:{value}".encode("utf-8", "surrogatepass"))
        elif op == "value" and index:
            name = lines[index].split(b":", 1)[0]
            lines[index] = name + b": " + draw(sip_text(60)).encode("utf-8", "surrogatepass")
        elif op == "drop" and index:
            del lines[index]
        elif op == "dup":
            lines.insert(index, lines[index])
        elif op == "start":
            lines[0] = draw(sip_text(60)).encode("utf-8", "surrogatepass") + b" SIP/2.0"
        data = b"\r\n".join(lines) + b"\r\n\r\n" + body
        if op == "bytes":
            at = draw(st.integers(0, len(data)))
            data = data[:at] + draw(st.binary(max_size=8)) + data[at:]
        elif op == "cut":
            data = data[: draw(st.integers(0, len(data)))]
    return data


@fuzz_settings(2.0)
@given(st.binary(max_size=1500))
def test_sip_parser_random_bytes(data: bytes) -> None:
    TALLY_ADD("sip random bytes")
    sip_outcome(data)


@fuzz_settings(3.0)
@given(mutated_sip())
def test_sip_parser_mutated_messages(data: bytes) -> None:
    TALLY_ADD("sip mutated messages")
    sip_outcome(data)


# ------------------------------------------------------------------------ SDP

OFFER = load("valid-compact-headers.sip").decode().split("\r\n\r\n", 1)[1]
_SDP_VALUES = st.one_of(
    st.integers(-5, 70000).map(str), st.sampled_from(["0", "8", "101", "127", "128", "²", "1_0", "+5", "-1", "99999"]),
    st.text(st.sampled_from(list("aZ09 ./:;=-") + ["\t", "\x00", "é"]), max_size=20),
)


@st.composite
def sdp_texts(draw: st.DrawFn) -> str:
    lines = OFFER.strip().split("\r\n")
    for _ in range(draw(st.integers(1, 5))):
        index = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["m", "c", "a", "drop", "dup", "raw"]))
        if op == "m":
            fields = [draw(st.sampled_from(["audio", "video", "application"])), draw(_SDP_VALUES),
                      draw(st.sampled_from(["RTP/AVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVPF", "UDP/DTLS/SCTP", "x"]))]
            fields += draw(st.lists(_SDP_VALUES, max_size=4))
            lines.insert(index, "m=" + " ".join(fields))
        elif op == "c":
            address = draw(st.one_of(st.ip_addresses().map(str), _SDP_VALUES, st.just("host.example.com")))
            lines.insert(index, f"c=IN {draw(st.sampled_from(['IP4', 'IP6', 'X']))} {address}")
        elif op == "a":
            name = draw(st.sampled_from(["rtpmap", "fmtp", "ptime", "sendonly", "inactive", "x"]))
            lines.insert(index, f"a={name}:{draw(_SDP_VALUES)} {draw(_SDP_VALUES)}/{draw(_SDP_VALUES)}")
        elif op == "drop":
            del lines[index]
        elif op == "dup":
            lines.insert(index, lines[index])
        else:
            lines.insert(index, draw(st.text(max_size=30)))
        if not lines:
            lines = ["v=0"]
    return "\r\n".join(lines) + "\r\n"


def test_sdp_corpus(tally: Counter[str]) -> None:
    base = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 5000 RTP/AVP 0\r\n"
    cases = {
        base.replace("5000", "99999"): "port 99999 out of range",
        base.replace("AVP 0", "AVP 300"): "payload type '300' is not 0-127",
        base.replace("AVP 0", "AVP \u00b2"): "payload type",
        base.replace("5000", "\u00b2"): "malformed m= line",
        base.replace("AVP 0", "AVP"): "malformed m= line",
        base.replace("192.0.2.1", "host.example.com"): "not an IP address",
        base.replace(" 192.0.2.1", ""): "malformed c= line",
        "v=0\r\nm=audio 5000 RTP/AVP 0\r\n": "no c= line",
        "v=0\r\n": "no m= line",
        "v=0\r\nc=IN IP4 192.0.2.1\r\n" + "m=audio 5000 RTP/AVP 0\r\n" * 20: "more than 16",
    }
    for text, reason in cases.items():
        with pytest.raises(sdp.SdpError, match=re.escape(reason)):
            sdp.negotiate(sdp.parse(text))
        tally["sdp corpus"] += 1
    # Nonsense attributes are ignored rather than fatal: the default ptime holds.
    odd = sdp.parse(base + "a=ptime:\u00b2\r\na=ptime:100000\r\na=rtpmap:\u0663 PCMU/8000\r\n")
    assert sdp.negotiate(odd)[1].ptime == 20  # type: ignore[index]
    tally["sdp corpus"] += 1


@fuzz_settings(3.0)
@given(sdp_texts())
def test_sdp_mutated_offers(text: str) -> None:
    TALLY_ADD("sdp mutated offers")
    sdp_outcome(text)


@fuzz_settings(1.0)
@given(st.text(max_size=600))
def test_sdp_random_text(text: str) -> None:
    TALLY_ADD("sdp random text")
    sdp_outcome(text)


# ------------------------------------------------------------------------ RTP


@st.composite
def rtp_datagrams(draw: st.DrawFn) -> bytes:
    """Headers with every field drawn: version, padding, extension, CSRC count, lengths."""
    version = draw(st.sampled_from([2, 2, 2, 2, 0, 1, 3]))
    pad, ext, cc = draw(st.booleans()), draw(st.booleans()), draw(st.sampled_from([0, 0, 1, 2, 15]))
    first = version << 6 | pad << 5 | ext << 4 | cc
    header = bytes([first, draw(st.integers(0, 255))]) + draw(st.binary(min_size=10, max_size=10))
    body = draw(st.binary(max_size=4 * cc + 8)) if cc else b""
    if ext:
        body += draw(st.binary(min_size=2, max_size=2)) + draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
        body += draw(st.binary(max_size=16))
    body += draw(st.binary(max_size=200))
    if pad:
        body += bytes([draw(st.integers(0, 255))])
    data = header + body
    return data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data


def test_rtp_corpus(tally: Counter[str]) -> None:
    ok = packet.RtpPacket(0, 1, 160, 7, b"\xff" * 160).serialize()
    cases = {
        ok[:11]: "shorter than an RTP header",
        bytes([0x00]) + ok[1:]: "RTP version 0",
        bytes([0xC0]) + ok[1:]: "RTP version 3",
        bytes([0x8F]) + ok[1:12] + b"\x00" * 20: "longer than the datagram",  # 15 CSRCs announced, 5 sent
        bytes([0x90]) + ok[1:12] + b"\xbe\xde\xff\xff": "longer than the datagram",  # extension of 256 KB
        bytes([0x90]) + ok[1:12] + b"\xbe": "truncated RTP header extension",
        bytes([0xA0]) + ok[1:] + b"\x00": "padding length of zero",
        bytes([0xA0]) + ok[1:12] + b"\x01\x02\xff": "padding of 255 bytes exceeds",  # padding bit lying
    }
    for data, reason in cases.items():
        with pytest.raises(packet.RtpError, match=reason):
            packet.parse(data)
        tally["rtp corpus"] += 1


@fuzz_settings(3.0)
@given(rtp_datagrams())
def test_rtp_header_fields(data: bytes) -> None:
    TALLY_ADD("rtp structured headers")
    rtp_outcome(data)


@fuzz_settings(1.0)
@given(st.binary(max_size=300))
def test_rtp_random_bytes(data: bytes) -> None:
    TALLY_ADD("rtp random bytes")
    rtp_outcome(data)


# -------------------------------------------------------------- RFC 4733 DTMF


def test_dtmf_corpus(tally: Counter[str]) -> None:
    with pytest.raises(dtmf.DtmfError, match="need 4"):
        dtmf.parse_event(b"\x01\x80")
    with pytest.raises(dtmf.DtmfError, match="not a keypad event"):
        dtmf.parse_event(bytes([16, 0x8A, 0, 160]))  # flash-hook: legal RFC 4733, not a digit
    with pytest.raises(dtmf.DtmfError, match="not a DTMF digit"):
        dtmf.build_event("E", duration=160, end=True)
    receiver = dtmf.DtmfReceiver()
    presses = [receiver.feed(1000, payload) for payload, _ in dtmf.press_payloads("#")]
    assert [p for p in presses if p] == ["#"]  # one press however many packets (End sent three times)
    tally["dtmf corpus"] += 4


@fuzz_settings(2.0)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=8)), max_size=30))
def test_dtmf_receiver_random_events(events: list[tuple[int, bytes]]) -> None:
    TALLY_ADD("dtmf random events")
    receiver = dtmf.DtmfReceiver()
    for timestamp, payload in events:
        try:
            digit = receiver.feed(timestamp, payload)
        except dtmf.DtmfError as exc:
            assert str(exc)
            continue
        assert digit is None or digit in dtmf.EVENT_DIGITS


# ---------------------------------------------- the receive path, end to end


@fuzz_settings(0.5)
@given(st.lists(st.one_of(rtp_datagrams(), st.builds(
    lambda pt, seq, ts, ssrc, size: packet.RtpPacket(pt, seq, ts, ssrc, b"\x55" * size).serialize(),
    st.sampled_from([0, 8, 13, 101, 127]), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1),
    st.sampled_from([1, 2]), st.integers(0, 480)),
), max_size=60))
def test_rtp_session_receive_path_survives_any_stream(datagrams: list[bytes]) -> None:
    """What an RtpSession does with a socket's worth of garbage: count it, never raise."""
    TALLY_ADD("rtp session datagrams", len(datagrams))
    digits: list[str] = []
    session = RtpSession(on_dtmf=digits.append)
    for i, data in enumerate(datagrams):
        session._received(data, ("192.0.2.9", 4000))
        if i % 3 == 0:
            frame, _real = session.read_frame()
            assert frame.dtype == np.int16 and len(frame) == 160
    assert all(d in dtmf.EVENT_DIGITS for d in digits)
    assert len(session.jitter._chunks) <= MAX_CHUNKS


@fuzz_settings(1.0)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2000), st.floats(0, 1000)), max_size=400))
def test_jitter_buffer_bounded_under_scattered_timestamps(pushes: list[tuple[int, int, float]]) -> None:
    TALLY_ADD("jitter buffer pushes", len(pushes))
    buffer = JitterBuffer()
    for i, (timestamp, count, arrival) in enumerate(pushes):
        buffer.push(timestamp, np.full(count, 1000, dtype=np.int16), arrival)
        if i % 2:
            frame, _ = buffer.pop()
            assert len(frame) == 160 and frame.dtype == np.int16
    assert len(buffer._chunks) <= MAX_CHUNKS


def test_jitter_buffer_flood_keeps_memory_and_tick_cost_bounded() -> None:
    """10 000 packets at scattered future timestamps: memory capped, a tick stays cheap."""
    buffer = JitterBuffer()
    rng = np.random.default_rng(3)
    for timestamp in rng.integers(0, 2**31, 10_000):
        buffer.push(int(timestamp), np.zeros(160, dtype=np.int16), 0.0)
    assert len(buffer._chunks) <= MAX_CHUNKS and buffer.stats.overflow > 9_000
    started = time.perf_counter()
    for _ in range(50):
        buffer.pop()
    assert (time.perf_counter() - started) / 50 < 0.002  # well inside a 20 ms tick


def TALLY_ADD(name: str, count: int = 1) -> None:  # noqa: N802 - hypothesis tests cannot take fixtures
    from tests.reliability.conftest import TALLY

    TALLY[name] += count
