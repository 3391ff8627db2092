"""SIP message parsing/building and SDP offer/answer, on messages real peers send."""

from __future__ import annotations

import pytest

from transports.sip import message as sipmsg
from transports.sip import sdp

INVITE = (
    "INVITE sip:bot@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1-0;rport\r\n"
    "v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-proxy\r\n"
    'f: "Caller" <sip:alice@127.0.0.1:5070>;tag=abc\r\n'
    "To: <sip:bot@127.0.0.1:5060>\r\n"
    "i: 1-123@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "m: <sip:alice@127.0.0.1:5070>\r\n"
    "Subject: folded\r\n"
    "  header line\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {length}\r\n"
    "\r\n"
    "{body}"
)
OFFER = (
    "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n"
    "c=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=video 6002 RTP/AVP 96\r\n"
    "m=audio 6000 RTP/AVP 8 0 101\r\n"
    "a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:30\r\n"
)


def _invite(body: str = OFFER, length: int | None = None) -> bytes:
    size = len(body.encode()) if length is None else length
    return INVITE.format(length=size, body=body).encode()


def test_parse_invite_with_compact_and_folded_headers() -> None:
    msg = sipmsg.parse(_invite())
    assert msg.method == "INVITE" and msg.uri == "sip:bot@127.0.0.1:5060"
    assert msg.call_id == "1-123@127.0.0.1" and msg.cseq == (1, "INVITE")
    assert msg.from_tag == "abc" and msg.to_tag == ""
    assert msg.branch == "z9hG4bK-1-0" and len(msg.get_all("Via")) == 2
    assert msg.get("Subject") == "folded header line"
    assert msg.body.decode() == OFFER


def test_body_beyond_content_length_is_dropped() -> None:
    msg = sipmsg.parse(_invite(OFFER + "garbage", length=len(OFFER)))
    assert msg.body.decode() == OFFER


@pytest.mark.parametrize(
    "data, reason, answerable",
    [
        (b"hello world", "no blank line", False),
        (b"INVITE sip:x SIP/3.0\r\n\r\n", "unsupported SIP version", False),
        (_invite(length=9999), "shorter than Content-Length", True),
        (_invite().replace(b"CSeq: 1 INVITE", b"CSeq: one INVITE"), "malformed CSeq", True),
        (_invite().replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), "does not match", True),
        (_invite().replace(b"i: 1-123@127.0.0.1\r\n", b""), "missing Call-ID", True),
        (b"\xff\xfe INVITE\r\n\r\n", "not UTF-8", False),
    ],
)
def test_malformed_messages_name_the_problem(data: bytes, reason: str, answerable: bool) -> None:
    with pytest.raises(sipmsg.SipParseError, match=reason) as info:
        sipmsg.parse(data)
    assert (info.value.partial is not None) == answerable


def test_response_copies_dialog_headers_and_adds_tag() -> None:
    request = sipmsg.parse(_invite())
    response = sipmsg.make_response(request, 180, to_tag="xyz")
    reparsed = sipmsg.parse(response.serialize())
    assert reparsed.status == 180 and reparsed.reason == "Ringing"
    assert reparsed.get_all("Via") == request.get_all("Via")
    assert reparsed.to_tag == "xyz" and reparsed.call_id == request.call_id
    assert reparsed.get("Content-Length") == "0"


def test_uri_and_name_addr_parsing() -> None:
    uri = sipmsg.parse_uri("sip:alice@[::1]:5070;transport=udp")
    assert (uri.user, uri.host, uri.port, uri.params) == ("alice", "[::1]", 5070, {"transport": "udp"})
    addr = sipmsg.parse_name_addr('"Bob, Jr" <sip:bob@h;lr>;tag=9')
    assert (addr.display, addr.uri, addr.params["tag"]) == ("Bob, Jr", "sip:bob@h;lr", "9")
    assert sipmsg.split_commas('"a,b" <sip:x>, <sip:y;p=1,2>') == ['"a,b" <sip:x>', "<sip:y;p=1,2>"]


def test_answer_prefers_callers_codec_and_mirrors_other_m_lines() -> None:
    offer = sdp.parse(OFFER)
    index, agreed = sdp.negotiate(offer)
    assert index == 1 and agreed.codec == "PCMA" and agreed.payload_type == 8
    assert agreed.dtmf_payload_type == 101 and agreed.ptime == 30
    assert (agreed.remote_host, agreed.remote_port, agreed.on_hold) == ("127.0.0.1", 6000, False)
    answer = sdp.parse(sdp.build_answer(offer, index, agreed, local_ip="127.0.0.1",
                                        local_port=7000, session_id=1, version=1))
    assert [m.port for m in answer.media] == [0, 7000]
    assert answer.media[1].formats == [8, 101]


def test_hold_is_detected_both_ways() -> None:
    held = sdp.parse(OFFER.replace("a=ptime:30", "a=sendonly"))
    assert sdp.negotiate(held)[1].direction == "recvonly"
    old_style = sdp.parse(OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0"))
    assert sdp.negotiate(old_style)[1].on_hold


def test_offer_without_g711_is_refused() -> None:
    opus_only = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n"
    assert sdp.negotiate(sdp.parse(opus_only)) is None
    with pytest.raises(sdp.SdpError):
        sdp.parse("v=0\r\n")


def test_offer_round_trips_through_read_answer() -> None:
    offer_text = sdp.build_offer(local_ip="127.0.0.1", local_port=7002, session_id=5, version=1)
    agreed = sdp.read_answer(sdp.parse(offer_text))
    assert (agreed.codec, agreed.dtmf_payload_type, agreed.remote_port) == ("PCMU", 101, 7002)
