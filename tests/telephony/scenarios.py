"""sipp scenario XML, built per test (pcap paths are baked in: sipp reads them at load)."""

from __future__ import annotations

from pathlib import Path

_HEAD = '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="{name}">\n'
_FROM = "From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]"
_TO = "To: <sip:bot@[remote_ip]:[remote_port]>"

_INVITE = f"""
  <send retrans="500">
    <![CDATA[
      INVITE sip:bot@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      {_FROM}
      {_TO}
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      X-Customer: 42
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[local_ip_type] [local_ip]
      t=0 0
      m=audio [auto_media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
"""

_ANSWERED = """
  <recv response="200" rtd="true"/>
  <send>
    <![CDATA[
      ACK sip:bot@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      {from_}
      {to}[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
""".format(from_=_FROM, to=_TO)

_BYE = """
  <send retrans="500">
    <![CDATA[
      BYE sip:bot@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      {from_}
      {to}[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} BYE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" crlf="true"/>
"""


def _play(pcap: Path, pause_ms: int) -> str:
    return f"""
  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>
  <pause milliseconds="{pause_ms}"/>
"""


def call_playing(pcaps: list[tuple[Path, int]], *, hold_ms: int = 0, name: str = "call") -> str:
    """INVITE, answer, play each pcap (with a pause after it), BYE."""
    body = _HEAD.format(name=name) + _INVITE + _ANSWERED
    for pcap, pause in pcaps:
        body += _play(pcap, pause)
    if hold_ms:
        body += f'  <pause milliseconds="{hold_ms}"/>\n'
    body += _BYE.format(from_=_FROM, to=_TO, cseq=2)
    return body + "</scenario>\n"


def call_with_hold(pcap: Path) -> str:
    """Answered call, re-INVITE with a=sendonly (hold) that must be answered recvonly, BYE."""
    reinvite = f"""
  <send retrans="500">
    <![CDATA[
      INVITE sip:bot@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      {_FROM}
      {_TO}[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687638 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[local_ip_type] [local_ip]
      t=0 0
      m=audio [auto_media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=sendonly
    ]]>
  </send>
  <recv response="200">
    <action><ereg regexp="a=recvonly" search_in="body" check_it="true" assign_to="dummy"/></action>
  </recv>
  <send>
    <![CDATA[
      ACK sip:bot@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      {_FROM}
      {_TO}[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
"""
    body = _HEAD.format(name="hold") + _INVITE + _ANSWERED + _play(pcap, 500) + reinvite
    body += '  <nop><action><log message="hold answered: [$dummy]"/></action></nop>\n'
    body += '  <pause milliseconds="300"/>\n' + _BYE.format(from_=_FROM, to=_TO, cseq=3)
    return body + "</scenario>\n"


def cancelled_call() -> str:
    """INVITE, wait for ringing, CANCEL; expect 200 for the CANCEL and 487 for the INVITE."""
    cancel = f"""
  <send>
    <![CDATA[
      CANCEL sip:bot@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-4]
      {_FROM}
      {_TO}
      Call-ID: [call_id]
      CSeq: 1 CANCEL
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"/>
  <recv response="487"/>
  <send>
    <![CDATA[
      ACK sip:bot@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-7]
      {_FROM}
      {_TO}[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
"""
    invite = _INVITE.replace('<recv response="180" optional="true"/>', '<recv response="180"/>')
    return _HEAD.format(name="cancel") + invite + '  <pause milliseconds="200"/>\n' + cancel + "</scenario>\n"


def uas_accepting_transfer(expected_target: str) -> str:
    """A callee that answers, accepts our REFER (202), reports success by NOTIFY, then expects BYE."""
    return _HEAD.format(name="refer-target") + f"""
  <recv request="INVITE" crlf="true"/>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:callee@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <recv request="REFER">
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="rfrom"/>
      <ereg regexp="sip:[^>;]*" search_in="hdr" header="Contact:" assign_to="rcontact"/>
      <ereg regexp="{expected_target}" search_in="hdr" header="Refer-To:" check_it="true" assign_to="rto"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      SIP/2.0 202 Accepted
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
  <nop><action><log message="refer to [$rto]"/></action></nop>
  <send retrans="500">
    <![CDATA[
      NOTIFY [$rcontact] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:callee@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
      To: [$rfrom]
      Call-ID: [call_id]
      CSeq: 1 NOTIFY
      Max-Forwards: 70
      Event: refer
      Subscription-State: terminated;reason=noresource
      Content-Type: message/sipfrag
      Content-Length: [len]

      SIP/2.0 200 OK
    ]]>
  </send>
  <recv response="200"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
</scenario>
"""


def registrar(realm: str, user: str, password: str) -> str:
    """A registrar that challenges REGISTER with digest auth and checks the answer (sipp verifyauth)."""
    return _HEAD.format(name="registrar") + f"""
  <recv request="REGISTER"/>
  <send>
    <![CDATA[
      SIP/2.0 401 Unauthorized
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      WWW-Authenticate: Digest realm="{realm}", nonce="[pid]n[call_number]x", qop="auth", algorithm=MD5
      Content-Length: 0
    ]]>
  </send>
  <recv request="REGISTER">
    <action>
      <verifyauth assign_to="authvalid" username="{user}" password="{password}"/>
    </action>
  </recv>
  <nop hide="true" test="authvalid" next="good"/>
  <send next="end">
    <![CDATA[
      SIP/2.0 403 Forbidden
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
  <label id="good"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      [last_Contact:]
      Expires: 300
      Content-Length: 0
    ]]>
  </send>
  <label id="end"/>
</scenario>
"""


def refused_call() -> str:
    """INVITE that must be refused with 503 and a Retry-After (a busy or draining server); ACK it."""
    refused = f"""
  <recv response="503">
    <action>
      <ereg regexp="[0-9]+" search_in="hdr" header="Retry-After:" check_it="true" assign_to="retry"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      ACK sip:bot@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      {_FROM}
      {_TO}[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <nop><action><log message="refused, retry after [$retry]"/></action></nop>
"""
    return _HEAD.format(name="refused") + _INVITE + refused + "</scenario>\n"
