"""SDP offer/answer (RFC 4566, RFC 3264) for one G.711 audio stream.

We speak PCMU and PCMA (static payload types 0 and 8) plus RFC 4733
telephone-event. An answer mirrors every m-line of the offer (refused ones
get port 0, as RFC 3264 §6 requires) and picks the first offered codec we
support, so the caller's preference wins. Hold is read from the direction
attribute or the old ``c=0.0.0.0`` convention.

Whatever the text, :func:`parse` and :func:`negotiate` raise only
:class:`SdpError`: a port or payload type out of range, or a media address
that is not an IP literal (sending to a host name would block the event loop
on DNS), is refused here rather than failing later inside the media path.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

STATIC_CODECS = {0: ("PCMU", 8000), 8: ("PCMA", 8000)}
SUPPORTED = ("PCMU", "PCMA")
DEFAULT_DTMF_PT = 101
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
MAX_MEDIA_LINES = 16
_UINT = re.compile(r"[0-9]{1,9}")  # ASCII only: int() also takes "٣" and "1_0"
_MIRROR = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


class SdpError(ValueError):
    """The SDP cannot be parsed, or offers nothing we can use."""


@dataclass(slots=True)
class Media:
    kind: str
    port: int
    proto: str
    formats: list[int]
    connection: str | None = None
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    direction: str | None = None
    ptime: int | None = None

    def codec(self, pt: int) -> tuple[str, int] | None:
        return self.rtpmap.get(pt) or STATIC_CODECS.get(pt)


@dataclass(slots=True)
class Session:
    origin: str = ""
    connection: str | None = None
    direction: str = "sendrecv"
    media: list[Media] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class Negotiated:
    """What both sides agreed on for the audio stream."""

    remote_host: str
    remote_port: int
    codec: str
    payload_type: int
    dtmf_payload_type: int | None
    ptime: int
    direction: str  # ours: what we may do (sendrecv, recvonly while held, ...)

    @property
    def on_hold(self) -> bool:
        return self.direction != "sendrecv"


def _uint(text: str) -> int | None:
    text = text.strip()
    return int(text) if _UINT.fullmatch(text) else None


def parse(text: str) -> Session:
    session = Session()
    current: Media | None = None
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "o":
            session.origin = value
        elif kind == "c":
            address = _connection_address(value)
            if current is None:
                session.connection = address
            else:
                current.connection = address
        elif kind == "m":
            if len(session.media) >= MAX_MEDIA_LINES:
                raise SdpError(f"more than {MAX_MEDIA_LINES} m= lines")
            current = _parse_m_line(value)
            session.media.append(current)
        elif kind == "a":
            _apply_attribute(session, current, value)
    if not session.media:
        raise SdpError("SDP has no m= line")
    return session


def _connection_address(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN":
        raise SdpError(f"malformed c= line {value[:60]!r}")
    return parts[2].split("/")[0]


def _parse_m_line(value: str) -> Media:
    parts = value.split()
    port = _uint(parts[1].split("/")[0]) if len(parts) >= 4 else None
    if port is None:
        raise SdpError(f"malformed m= line {value[:60]!r}")
    if port > 65535:
        raise SdpError(f"m= port {port} out of range")
    formats: list[int] = []
    if "RTP" in parts[2].upper():
        for text in parts[3:]:
            pt = _uint(text)
            if pt is None or pt > 127:
                raise SdpError(f"RTP payload type {text[:10]!r} is not 0-127")
            formats.append(pt)
    # other media (e.g. m=application ... webrtc-datachannel) have token formats: not ours
    return Media(parts[0], port, parts[2], formats)


def _apply_attribute(session: Session, media: Media | None, value: str) -> None:
    name, _, rest = value.partition(":")
    if name in _DIRECTIONS:
        if media is None:
            session.direction = name
        else:
            media.direction = name
    elif media is None:
        return
    elif name == "rtpmap":
        pt_text, _, encoding = rest.partition(" ")
        pieces = encoding.strip().split("/")
        pt, rate = _uint(pt_text), _uint(pieces[1]) if len(pieces) >= 2 else None
        if pt is not None and rate is not None:
            media.rtpmap[pt] = (pieces[0], rate)
    elif name == "fmtp":
        pt_text, _, params = rest.partition(" ")
        pt = _uint(pt_text)
        if pt is not None:
            media.fmtp[pt] = params
    elif name == "ptime":
        ptime = _uint(rest)
        if ptime is not None and 10 <= ptime <= 200:  # else ignored: the default 20 ms holds
            media.ptime = ptime


def _find_dtmf(media: Media, clock_rate: int) -> int | None:
    for pt in media.formats:
        codec = media.codec(pt)
        if codec and codec[0].lower() == "telephone-event" and codec[1] == clock_rate:
            return pt
    return None


def negotiate(
    offer: Session, supported: tuple[str, ...] = SUPPORTED
) -> tuple[int, Negotiated] | None:
    """Pick the audio stream and codec to answer with; None if nothing fits.

    Returns the index of the chosen m-line and the agreement.
    """
    for index, media in enumerate(offer.media):
        if media.kind != "audio" or media.port == 0 or not media.proto.startswith("RTP/"):
            continue
        for pt in media.formats:
            codec = media.codec(pt)
            if codec and codec[0].upper() in supported and codec[1] == 8000:
                host = media.connection or offer.connection
                if host is None:
                    raise SdpError("no c= line for the audio stream")
                try:
                    ipaddress.ip_address(host)
                except ValueError:
                    raise SdpError(f"c= address {host[:40]!r} is not an IP address") from None
                their = media.direction or offer.direction
                if host in ("0.0.0.0", "::"):  # RFC 2543-style hold
                    their = "inactive" if their == "recvonly" else "sendonly"
                return index, Negotiated(
                    remote_host=host,
                    remote_port=media.port,
                    codec=codec[0].upper(),
                    payload_type=pt,
                    dtmf_payload_type=_find_dtmf(media, 8000),
                    ptime=media.ptime or 20,
                    direction=_MIRROR.get(their, "sendrecv"),
                )
    return None


def _session_header(local_ip: str, session_id: int, version: int) -> list[str]:
    return [
        "v=0",
        f"o=voxwire {session_id} {version} IN IP4 {local_ip}",
        "s=voxwire",
        f"c=IN IP4 {local_ip}",
        "t=0 0",
    ]


def build_answer(
    offer: Session,
    chosen_index: int,
    agreed: Negotiated,
    *,
    local_ip: str,
    local_port: int,
    session_id: int,
    version: int,
) -> str:
    lines = _session_header(local_ip, session_id, version)
    for index, media in enumerate(offer.media):
        if index != chosen_index:
            formats = " ".join(str(f) for f in media.formats) or "0"
            lines.append(f"m={media.kind} 0 {media.proto} {formats}")
            continue
        pts = [agreed.payload_type]
        if agreed.dtmf_payload_type is not None:
            pts.append(agreed.dtmf_payload_type)
        lines.append(f"m=audio {local_port} {media.proto} {' '.join(map(str, pts))}")
        lines.append(f"a=rtpmap:{agreed.payload_type} {agreed.codec}/8000")
        if agreed.dtmf_payload_type is not None:
            lines.append(f"a=rtpmap:{agreed.dtmf_payload_type} telephone-event/8000")
            lines.append(f"a=fmtp:{agreed.dtmf_payload_type} 0-16")
        lines.append("a=ptime:20")
        lines.append(f"a={agreed.direction}")
    return "\r\n".join(lines) + "\r\n"


def build_offer(
    *,
    local_ip: str,
    local_port: int,
    session_id: int,
    version: int,
    codecs: tuple[str, ...] = SUPPORTED,
    dtmf_payload_type: int = DEFAULT_DTMF_PT,
    direction: str = "sendrecv",
) -> str:
    by_name = {name: pt for pt, (name, _) in STATIC_CODECS.items()}
    pts = [by_name[c] for c in codecs] + [dtmf_payload_type]
    lines = _session_header(local_ip, session_id, version)
    lines.append(f"m=audio {local_port} RTP/AVP {' '.join(map(str, pts))}")
    for codec in codecs:
        lines.append(f"a=rtpmap:{by_name[codec]} {codec}/8000")
    lines.append(f"a=rtpmap:{dtmf_payload_type} telephone-event/8000")
    lines.append(f"a=fmtp:{dtmf_payload_type} 0-16")
    lines.append("a=ptime:20")
    lines.append(f"a={direction}")
    return "\r\n".join(lines) + "\r\n"


def read_answer(answer: Session) -> Negotiated:
    """The agreement an answer to our offer establishes (its first codec)."""
    picked = negotiate(answer)
    if picked is None:
        raise SdpError("the answer accepts none of our codecs")
    return picked[1]  # negotiate() already mirrors their direction into ours
