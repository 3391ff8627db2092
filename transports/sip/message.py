"""SIP messages (RFC 3261 §7): parse datagrams, build requests and responses.

Parsing is strict where a wrong guess would misroute a call (start line,
Request-URI, Via, From/To, CSeq, Content-Length, single-valued headers) and
lenient where real peers differ (LF-only line ends, compact header names,
folded lines, header case, whitespace around ``/`` and ``;``). A failure
raises :class:`SipParseError` with a reason fit for a ``400`` reason phrase,
the status to answer with, and, when the headers got far enough, the partial
message so the UA can answer it. Nothing else escapes: the RFC 4475 torture
messages, hypothesis and atheris in ``tests/reliability`` hold it to that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.utils import parsedate_tz

MAX_MESSAGE_BYTES = 65_535
MAX_HEADERS = 200
SIP_VERSION = "SIP/2.0"

_CANONICAL = {
    name.lower(): name
    for name in (
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Content-Length",
        "Content-Type", "Max-Forwards", "Record-Route", "Route", "Allow",
        "Supported", "Require", "Unsupported", "Accept", "User-Agent", "Server",
        "WWW-Authenticate", "Authorization", "Proxy-Authenticate",
        "Proxy-Authorization", "Refer-To", "Referred-By", "Event",
        "Subscription-State", "Expires", "Min-Expires", "Reason", "Retry-After",
        "Session-Expires", "Allow-Events", "Warning", "Subject",
    )
}
_COMPACT = {
    "v": "Via", "f": "From", "t": "To", "i": "Call-ID", "m": "Contact",
    "l": "Content-Length", "c": "Content-Type", "k": "Supported", "s": "Subject",
    "o": "Event", "r": "Refer-To", "b": "Referred-By", "u": "Allow-Events",
    "x": "Session-Expires",
}
# Headers whose comma-separated values are separate entries (§7.3.1).
_MULTI = {"Via", "Route", "Record-Route", "Contact", "Allow", "Supported", "Require"}
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_UINT = re.compile(r"[0-9]{1,10}")  # ASCII only: str.isdigit() also accepts "²" and "٣"
_ABSOLUTE_URI = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:[^\s<>\"]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_VIA = re.compile(r"SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+(\S.*)", re.IGNORECASE | re.DOTALL)
# Headers that may appear once (RFC 3261 §20); two of them make the message ambiguous.
_SINGLE = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Content-Type")

REASONS = {
    100: "Trying", 180: "Ringing", 183: "Session Progress", 200: "OK",
    202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 407: "Proxy Authentication Required",
    408: "Request Timeout", 415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 500: "Server Internal Error",
    501: "Not Implemented", 503: "Service Unavailable", 505: "Version Not Supported", 603: "Decline",
}


class SipParseError(ValueError):
    """A datagram is not valid SIP; ``partial`` holds what parsed, if anything.

    ``status`` is the response a UA should send when ``partial`` is answerable:
    400, or 505 for a SIP version other than 2.0.
    """

    def __init__(self, reason: str, partial: SipMessage | None = None, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial = partial
        self.status = status


def is_uint(text: str) -> bool:
    """ASCII decimal digits only (``int()`` and ``isdigit()`` accept far more)."""
    return _UINT.fullmatch(text) is not None


def canonical(name: str) -> str:
    lower = name.strip().lower()
    if lower in _COMPACT:
        return _COMPACT[lower]
    return _CANONICAL.get(lower) or "-".join(p.capitalize() for p in lower.split("-"))


def split_commas(value: str) -> list[str]:
    """Split a header value on commas outside quotes and angle brackets."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(value):
        if ch == '"' and (i == 0 or value[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and not quoted and depth == 0:
            parts.append(value[start:i].strip())
            start = i + 1
    parts.append(value[start:].strip())
    return [p for p in parts if p]


@dataclass(slots=True)
class SipMessage:
    """A request (``method``/``uri`` set) or a response (``status`` set)."""

    method: str | None = None
    uri: str | None = None
    status: int | None = None
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return self.method is not None

    # ---------------------------------------------------------------- headers

    def get(self, name: str) -> str | None:
        """The first value of a header (first entry for multi-value headers)."""
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        name = canonical(name)
        values: list[str] = []
        for key, value in self.headers:
            if key == name:
                values.extend(split_commas(value) if name in _MULTI else [value])
        return values

    def set(self, name: str, value: str) -> None:
        """Replace every value of ``name`` with one value (kept in place)."""
        name = canonical(name)
        index = next((i for i, (key, _) in enumerate(self.headers) if key == name), None)
        self.remove(name)
        if index is None:
            self.headers.append((name, value))
        else:
            self.headers.insert(index, (name, value))

    def add(self, name: str, value: str) -> None:
        self.headers.append((canonical(name), value))

    def remove(self, name: str) -> None:
        name = canonical(name)
        self.headers = [h for h in self.headers if h[0] != name]

    # -------------------------------------------------------- common fields

    @property
    def call_id(self) -> str:
        return self.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        return parse_cseq(self.get("CSeq") or "")

    @property
    def branch(self) -> str:
        via = self.get("Via")
        return parse_via(via).params.get("branch", "") if via else ""

    @property
    def from_tag(self) -> str:
        value = self.get("From")
        return parse_name_addr(value).params.get("tag", "") if value else ""

    @property
    def to_tag(self) -> str:
        value = self.get("To")
        return parse_name_addr(value).params.get("tag", "") if value else ""

    # ------------------------------------------------------------ serialize

    def serialize(self) -> bytes:
        if self.is_request:
            start = f"{self.method} {self.uri} {SIP_VERSION}"
        else:
            start = f"{SIP_VERSION} {self.status} {self.reason or REASONS.get(self.status or 0, '')}"
        lines = [start]
        lines += [f"{k}: {v}" for k, v in self.headers if k != "Content-Length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body

    def __str__(self) -> str:
        if self.is_request:
            return f"{self.method} {self.uri} (Call-ID {self.call_id})"
        return f"{self.status} {self.reason} (Call-ID {self.call_id})"


# ------------------------------------------------------------------- parsing


def parse(data: bytes) -> SipMessage:
    """Parse one datagram into a :class:`SipMessage`; only :class:`SipParseError` escapes."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, rest = data.partition(b"\n\n")
    if not sep:
        raise SipParseError("no blank line after the headers")
    errors: list[str] = []
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Keep going on a lossy decode so the partial message can still get its 400.
        errors.append(f"headers are not UTF-8 (byte {exc.start})")
        text = head.decode("utf-8", "replace")
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)  # RFC 3261 §7.5: ignore leading CRLFs (keep-alives)
    if not lines:
        raise SipParseError("; ".join(errors) or "empty message")
    try:
        message, status = _parse_start_line(lines[0], errors)
    except SipParseError as exc:
        raise SipParseError("; ".join([*errors, exc.reason])) from None
    unfolded: list[list[str]] = []  # pieces joined once: folding many lines stays linear
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and unfolded:
            unfolded[-1].append(line.strip())
        elif line:
            unfolded.append([line])
    if len(unfolded) > MAX_HEADERS:
        raise SipParseError(f"more than {MAX_HEADERS} header lines", status=status)
    for pieces in unfolded:
        line = " ".join(pieces)
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name.strip()):
            errors.append(f"malformed header line {line[:40]!r}")
            continue
        if _CONTROL.search(value):
            errors.append(f"control character in {name.strip()[:20]} header")
            continue
        message.headers.append((canonical(name), value.strip()))
    message.body = rest
    _check(message, errors, status)
    return message


def _parse_start_line(line: str, errors: list[str]) -> tuple[SipMessage, int]:
    """The start line; problems that still leave a recognisable request go to ``errors``."""
    if line.startswith("SIP/"):
        parts = line.split(" ", 2)
        if len(parts) < 2 or parts[0] != SIP_VERSION or not is_uint(parts[1]) or len(parts[1]) != 3:
            raise SipParseError(f"malformed status line {line[:60]!r}")
        status = int(parts[1])
        if not 100 <= status <= 699:
            raise SipParseError(f"status code {status} out of range")
        return SipMessage(status=status, reason=parts[2] if len(parts) > 2 else ""), 400
    tokens = line.split(" ")
    words = [t for t in tokens if t]
    if len(words) < 3 or not _TOKEN.fullmatch(words[0]) or not words[-1].upper().startswith("SIP/"):
        raise SipParseError(f"malformed request line {line[:60]!r}")
    message = SipMessage(method=words[0].upper(), uri=" ".join(words[1:-1]))
    status = 400
    if words[-1] != SIP_VERSION:
        errors.append(f"unsupported SIP version {words[-1][:20]!r}")
        status = 505
    if len(tokens) != 3:  # RFC 3261 §7.1: exactly one SP between the three elements
        errors.append("request line must be METHOD SP Request-URI SP SIP/2.0 (extra whitespace)")
    elif not _ABSOLUTE_URI.fullmatch(message.uri or ""):
        errors.append(f"malformed Request-URI {message.uri[:40]!r}")  # type: ignore[index]
    elif (message.uri or "").split(":", 1)[0].lower() in ("sip", "sips") and "?" in message.uri.rsplit("@", 1)[-1]:  # type: ignore[union-attr]
        errors.append("headers are not allowed in a SIP Request-URI")
    return message, status


def _check(message: SipMessage, errors: list[str], status: int = 400) -> None:
    """Validate what a transaction layer relies on; raise with the partial."""
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if message.get(name) is None:
            errors.append(f"missing {name} header")
    counts: dict[str, int] = {}
    for key, _ in message.headers:
        counts[key] = counts.get(key, 0) + 1
    errors += [f"{counts[name]} {name} headers" for name in _SINGLE if counts.get(name, 0) > 1]
    for value in message.get_all("Via"):
        try:
            parse_via(value)
        except ValueError as exc:
            errors.append(str(exc))
            break
    for name in ("From", "To"):
        value = message.get(name)
        if value is not None:
            try:
                parse_name_addr(value)
                if len(split_commas(value)) > 1:
                    raise ValueError("more than one address")
            except ValueError as exc:
                errors.append(f"{name}: {exc}")
    cseq = message.get("CSeq")
    if cseq is not None:
        try:
            number, method = parse_cseq(cseq)
        except ValueError as exc:
            errors.append(str(exc))
        else:
            if message.is_request and method != message.method:
                errors.append(f"CSeq method {method} does not match {message.method}")
            if number >= 2**31:
                errors.append("CSeq number out of range")
    forwards = message.get("Max-Forwards")
    if forwards is not None and (not is_uint(forwards) or int(forwards) > 255):
        errors.append(f"bad Max-Forwards {forwards[:20]!r}")
    date = message.get("Date")
    if date is not None and (not date.rstrip().endswith("GMT") or parsedate_tz(date) is None):
        errors.append(f"bad Date {date[:40]!r} (RFC 1123 in GMT)")
    length = message.get("Content-Length")
    if length is not None:
        if not is_uint(length):
            errors.append(f"bad Content-Length {length[:20]!r}")
        elif int(length) > len(message.body):
            errors.append(f"body of {len(message.body)} bytes is shorter than Content-Length {length}")
        else:
            message.body = message.body[: int(length)]  # §18.3: drop the excess
    if errors:
        # A request of another SIP version with no headers is not worth a 505.
        answerable = status != 505 or message.get("Via") is not None
        raise SipParseError("; ".join(errors), message if answerable else None, status)


def parse_cseq(value: str) -> tuple[int, str]:
    parts = value.split()
    if len(parts) != 2 or not _TOKEN.fullmatch(parts[1]) or not parts[0].isascii() or not parts[0].isdigit():
        raise ValueError(f"malformed CSeq {value[:40]!r}")
    if len(parts[0]) > 10:
        raise ValueError("CSeq number out of range")
    return int(parts[0]), parts[1].upper()


def parse_params(text: str) -> dict[str, str]:
    """``;a=1;b`` → ``{"a": "1", "b": ""}`` (names lower-cased)."""
    params: dict[str, str] = {}
    for item in text.split(";"):
        item = item.strip()
        if item:
            key, _, value = item.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
    return params


@dataclass(slots=True)
class NameAddr:
    display: str
    uri: str
    params: dict[str, str]

    def __str__(self) -> str:
        shown = f'"{self.display}" ' if self.display else ""
        params = "".join(f";{k}={v}" if v else f";{k}" for k, v in self.params.items())
        return f"{shown}<{self.uri}>{params}"


def parse_name_addr(value: str) -> NameAddr:
    """``"Display" <uri>;params`` or ``uri;params``; raises ValueError naming the flaw."""
    value = value.strip()
    open_at = _unquoted_index(value, "<")
    if open_at >= 0:
        display = value[:open_at].strip()
        close = value.find(">", open_at)
        if close < 0:
            raise ValueError(f"unterminated <uri> in {value[:60]!r}")
        uri = value[open_at + 1 : close].strip()
        if display.startswith('"'):
            if _quoted_end(display) != len(display) - 1:
                raise ValueError(f"text after the quoted display name in {value[:60]!r}")
            display = display[1:-1]
        elif display and not all(_TOKEN.fullmatch(word) for word in display.split()):
            raise ValueError(f"display name {display[:40]!r} must be quoted")
        params = value[close + 1 :]
    else:
        if '"' in value:
            raise ValueError(f"a display name needs <uri> in {value[:60]!r}")
        uri, _, params = value.partition(";")
        display, uri = "", uri.strip()
    if not _ABSOLUTE_URI.fullmatch(uri):
        raise ValueError(f"malformed URI {uri[:40]!r}")
    return NameAddr(display, uri, parse_params(params))


def _unquoted_index(value: str, char: str) -> int:
    """Index of ``char`` outside double quotes (backslash escapes honoured), or -1."""
    quoted = escaped = False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == char and not quoted:
            return i
    if quoted:
        raise ValueError(f"unterminated quoted string in {value[:60]!r}")
    return -1


def _quoted_end(text: str) -> int:
    """Index of the quote closing the quoted string that opens ``text``."""
    escaped = False
    for i in range(1, len(text)):
        if escaped:
            escaped = False
        elif text[i] == "\\":
            escaped = True
        elif text[i] == '"':
            return i
    return -1


@dataclass(slots=True)
class SipUri:
    scheme: str
    user: str
    host: str
    port: int | None
    params: dict[str, str]

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        params = "".join(f";{k}={v}" if v else f";{k}" for k, v in self.params.items())
        return f"{self.scheme}:{user}{self.host}{port}{params}"


def parse_uri(value: str) -> SipUri:
    scheme, colon, rest = value.strip().partition(":")
    if not colon or scheme.lower() not in ("sip", "sips", "tel"):
        raise ValueError(f"not a SIP URI: {value[:60]!r}")
    rest = rest.split("?", 1)[0]
    hostport, _, params = rest.partition(";")
    user, at, host = hostport.rpartition("@")
    if not at:
        user, host = "", hostport
    port: int | None = None
    if host.startswith("["):  # IPv6 reference
        end = host.find("]")
        if end > 0 and host[end + 1 : end + 2] == ":":
            port = _port(host[end + 2 :])
        host = host[: end + 1]
    elif ":" in host:
        host, port_text = host.rsplit(":", 1)
        port = _port(port_text)
    return SipUri(scheme.lower(), user, host, port, parse_params(params))


def _port(text: str) -> int:
    if not is_uint(text) or not 0 < int(text) < 65536:
        raise ValueError(f"bad port {text[:10]!r}")
    return int(text)


@dataclass(slots=True)
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str]


def parse_via(value: str) -> Via:
    """One Via entry; whitespace around ``/`` is legal (RFC 3261 §25.1 SLASH)."""
    match = _VIA.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"malformed Via {value[:60]!r}")
    transport, rest = match.groups()
    sent_by, _, params = rest.partition(";")
    host, port = sent_by.strip(), None
    if ":" in host and not host.endswith("]"):
        host, port_text = host.rsplit(":", 1)
        port = _port(port_text.strip())
        host = host.strip()
    if not host or any(ch.isspace() for ch in host):
        raise ValueError(f"malformed Via sent-by {sent_by[:40]!r}")
    return Via(transport.upper(), host, port, parse_params(params))


# ------------------------------------------------------------------ building


def _has_tag(value: str) -> bool:
    try:
        return bool(parse_name_addr(value).params.get("tag"))
    except ValueError:
        return False


def make_response(
    request: SipMessage,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> SipMessage:
    """A response to ``request`` (§8.2.6): Vias, From, To(+tag), Call-ID, CSeq."""
    response = SipMessage(status=status, reason=reason or REASONS.get(status, "Unknown"))
    for value in request.get_all("Via"):
        response.add("Via", value)
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = request.get(name)
        if value is not None:
            if name == "To" and to_tag and not _has_tag(value):
                value = f"{value};tag={to_tag}"
            response.add(name, value)
    for name, value in headers or []:
        response.add(name, value)
    response.body = body
    return response
