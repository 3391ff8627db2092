"""Warm transfer: hold music for the caller, a spoken summary for the human, then REFER.

Over SIP both people are sipp: the caller calls the bot (its RTP echo sends
back exactly what it heard, so the bot's input is the caller's ear), and the
human is a sipp UAS with RTP echo answering the briefing call (its echo is
what the human heard). Over Twilio, the carrier's REST API is an
``httpx.MockTransport``: requests are built and inspected, never sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from agent.audio import resample
from agent.calls import CallInfo, CallManager
from agent.frames import (
    EventFrame,
    Frame,
    InputAudioFrame,
    OutputAudioFrame,
    StartFrame,
    TransferFrame,
    TTSStoppedFrame,
)
from agent.node import UPSTREAM, Node
from agent.session import Session
from tests.telephony.helpers import ESPEAK, SIPP, free_udp_port, run_sipp, speech_8k
from tests.telephony.twilio_client import TwilioTestClient
from transports.telephony import carrier_api, webhooks
from transports.telephony.warm_transfer import (
    CarrierConsult,
    SipConsult,
    WarmTransfer,
    WarmTransferFrame,
    consult_request,
    hold_music,
)

SUMMARY = "Maria Lopez wants to move her Tuesday appointment to Friday."


def match(reference: np.ndarray, signal: np.ndarray) -> float:
    """Best normalised correlation of ``reference`` anywhere in ``signal`` (silent stretches score 0)."""
    ref, sig = reference.astype(np.float64), signal.astype(np.float64)
    if len(sig) < len(ref):
        return 0.0
    n = 1 << (len(sig) + len(ref)).bit_length()
    corr = np.fft.irfft(np.fft.rfft(sig, n) * np.conj(np.fft.rfft(ref, n)), n)[: len(sig) - len(ref) + 1]
    energy = np.convolve(sig**2, np.ones(len(ref)), mode="valid")
    ref_energy = float(np.sum(ref**2))
    usable = energy > 1e-3 * ref_energy
    score = np.where(usable, corr / np.sqrt(np.maximum(energy, 1.0) * ref_energy), 0.0)
    return float(score.max())


def windowed_match(reference: np.ndarray, signal: np.ndarray, window: int = 2400) -> float:
    """Median :func:`match` of the voiced 0.3 s windows of ``reference``.

    A jitter buffer may conceal or drop a frame under load, which breaks one
    long alignment but not short ones.
    """
    windows = [reference[i : i + window] for i in range(0, len(reference) - window + 1, window)]
    voiced = [w for w in windows if np.sqrt(np.mean(w.astype(np.float64) ** 2)) > 500]
    return float(np.median([match(w, signal) for w in voiced])) if voiced else 0.0


def heard_music(heard8k: np.ndarray, notes: int = 8) -> float:
    """Median match of the hold loop's first ``notes`` notes (0.25 s each) in what the caller heard."""
    loop = hold_music(8000)
    note = len(loop) // 16
    return float(np.median([match(loop[i * note : (i + 1) * note], heard8k) for i in range(notes)]))


def test_hold_music_is_a_quiet_seamless_loop_in_the_phone_band() -> None:
    loop = hold_music(8000)
    assert len(loop) == 4 * 8000 and np.abs(loop).max() <= 3300  # -20 dBFS peak
    spectrum = np.abs(np.fft.rfft(loop.astype(np.float64)))
    freqs = np.fft.rfftfreq(len(loop), 1 / 8000)
    assert spectrum[(freqs >= 300) & (freqs <= 3400)].sum() > 0.97 * spectrum.sum()
    note = len(loop) // 16
    edges = np.abs(np.concatenate([loop[::note], loop[note - 1 :: note]]))
    assert edges.max() < 0.01 * np.abs(loop).max()  # every note (and the loop) starts and ends silent: no clicks


class Receptionist(Node):
    """Says its hand-off line, asks for a warm transfer, and records what the caller heard."""

    def __init__(self, handoff: np.ndarray, target: str) -> None:
        super().__init__(name="receptionist")
        self.handoff, self.target = handoff, target
        self.heard: list[np.ndarray] = []
        self.rate = 16000
        self.events: list[tuple[float, str]] = []
        self.spoke_until = 0.0

    async def process(self, frame: Frame, direction: int) -> None:
        if direction == UPSTREAM:
            await self.emit(frame, direction)
            return
        if isinstance(frame, StartFrame):
            self.rate = frame.input_sample_rate
            self.spawn(self._script(), interruptible=False)
        elif isinstance(frame, InputAudioFrame):
            self.heard.append(frame.samples.copy())
            return
        elif isinstance(frame, EventFrame):
            self.events.append((time.monotonic(), frame.kind))
        await self.emit(frame, direction)

    async def _script(self) -> None:
        await asyncio.sleep(0.3)
        await self.emit(OutputAudioFrame(pcm=self.handoff.tobytes(), sample_rate=8000, text="please hold", turn_id=1))
        await self.emit(TTSStoppedFrame(turn_id=1))
        await self.emit(WarmTransferFrame(target=self.target, summary=SUMMARY))

    def heard_8k(self) -> np.ndarray:
        audio = np.concatenate(self.heard).astype(np.float32) / 32768 if self.heard else np.zeros(0, np.float32)
        return np.round(resample(audio, self.rate, 8000) * 32767).astype(np.int16)


class EarOfTheHuman(Node):
    """In the briefing call: the human's RTP echo, i.e. what the human heard."""

    def __init__(self, store: list[np.ndarray]) -> None:
        super().__init__(name="human-ear")
        self.store = store

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, InputAudioFrame):
            self.store.append(frame.samples.copy())
            return
        await self.emit(frame, direction)


def _caller_scenario(human_uri: str) -> str:
    """sipp calls the bot, echoes its audio, accepts the REFER to ``human_uri`` (202 + NOTIFY 200), takes the BYE."""
    sdp_from = "sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]"
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="warm-transfer caller">
  <send retrans="500">
    <![CDATA[
      INVITE sip:desk@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: {sdp_from}
      To: <sip:desk@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true"/>
  <send>
    <![CDATA[
      ACK sip:desk@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: {sdp_from}
      To: <sip:desk@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv request="REFER" timeout="40000">
    <action>
      <ereg regexp="{human_uri}" search_in="hdr" header="Refer-To:" check_it="true" assign_to="referto"/>
      <ereg regexp="sip:[^>;]*" search_in="hdr" header="Contact:" assign_to="botcontact"/>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="botfrom"/>
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
  <nop><action><log message="referred to [$referto]"/></action></nop>
  <send retrans="500">
    <![CDATA[
      NOTIFY [$botcontact] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: {sdp_from}
      To: [$botfrom]
      Call-ID: [call_id]
      CSeq: 2 NOTIFY
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


@pytest.fixture(scope="module")
def whisper():  # type: ignore[no-untyped-def]
    from stt.models import load_model

    return load_model()


@pytest.mark.asyncio
@pytest.mark.skipif(SIPP is None or ESPEAK is None, reason="needs sipp (apt sip-tester) and espeak-ng")
async def test_sip_warm_transfer_holds_the_caller_briefs_the_human_then_refers(tmp_path: Path, whisper: Any) -> None:
    from stt.whisper import transcribe
    from transports.sip.transport import SipServer
    from tts.piper import PiperTTSNode

    human_port = free_udp_port()
    human_uri = f"sip:nurse@127.0.0.1:{human_port}"
    handoff = speech_8k("Let me get a nurse for you. Please hold.")
    bots: list[Receptionist] = []
    human_heard: list[np.ndarray] = []
    seen: list[tuple[float, str]] = []

    def receptionist(info: CallInfo) -> list[Node]:
        bots.append(Receptionist(handoff, human_uri))
        return [bots[-1], WarmTransfer(SipConsult(server, lambda: [EarOfTheHuman(human_heard), PiperTTSNode()]))]

    def watch(session: Session, info: CallInfo) -> None:
        session.subscribe(lambda f, d: seen.append((time.monotonic(), f.kind)) if isinstance(f, EventFrame) else None)

    manager = CallManager(receptionist)
    manager.on_session(watch)
    server = SipServer(manager, host="127.0.0.1", port=0)
    await server.start()
    (tmp_path / "human").mkdir()
    human = asyncio.create_task(run_sipp(
        ["-sn", "uas", "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(human_port), "-mp", str(free_udp_port()),
         "-rtp_echo", "-m", "1", "-nostdin", "-timeout", "40", "-timeout_error"], timeout=45, cwd=tmp_path / "human"))
    scenario = tmp_path / "caller.xml"
    scenario.write_text(_caller_scenario(human_uri))
    try:
        await asyncio.sleep(0.3)
        caller_code, caller_out = await run_sipp(
            [f"127.0.0.1:{server.port}", "-sf", str(scenario), "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", "0",
             "-mp", str(free_udp_port()), "-rtp_echo", "-m", "1", "-l", "1", "-nostdin", "-timeout", "45",
             "-timeout_error", "-trace_err"], timeout=50, cwd=tmp_path)
        human_code, human_out = await asyncio.wait_for(human, 10)
        await asyncio.sleep(0.2)
    finally:
        await server.stop()
    assert caller_code == 0, caller_out  # sipp checked Refer-To == the human, got our NOTIFY 200 and BYE
    assert human_code == 0, human_out  # the human's phone was called, answered and hung up by us
    assert [r.reason for r in manager.results] == ["transferred"], manager.results  # the briefing leg is not a call

    kinds = [kind for _, kind in seen]
    assert kinds.index("warm_transfer_started") < kinds.index("warm_transfer_briefed") < kinds.index(
        "transfer_accepted"), kinds
    at = dict((kind, t) for t, kind in seen)
    on_hold_s = at["warm_transfer_briefed"] - at["warm_transfer_started"]
    assert on_hold_s > 3.0, f"the REFER did not wait for the briefing ({on_hold_s:.1f} s on hold)"

    # The human heard the summary (their phone's echo of it, transcribed).
    text, _ = transcribe(whisper, np.concatenate(human_heard))
    text = text.lower()
    assert "tuesday" in text and "friday" in text, text
    # The caller heard the hand-off line, then music, not dead air.
    heard = bots[0].heard_8k()
    assert windowed_match(handoff, heard) > 0.8
    score = heard_music(heard)
    assert score > 0.8, f"the caller did not hear the hold music ({score:.2f})"


@pytest.mark.asyncio
async def test_twilio_warm_transfer_briefs_through_the_rest_api_then_transfers() -> None:
    from transports.telephony.server import CarrierServer

    sent: list[tuple[float, httpx.Request]] = []

    def carrier(request: httpx.Request) -> httpx.Response:
        sent.append((time.monotonic(), request))
        return httpx.Response(201 if request.url.path.endswith("/Calls.json") else 200, json={"sid": "CA0002"})

    client = httpx.AsyncClient(transport=httpx.MockTransport(carrier))
    control = carrier_api.CallControl("twilio", carrier_api.CarrierCredentials(account_sid="AC1", auth_token="t"),
                                      client)
    handoff = (2500 * np.sin(np.arange(6000) * 2 * np.pi * 1000 / 8000)).astype(np.int16)  # 0.75 s, not a hold note
    consult = CarrierConsult(control, "+15550199", ring_s=2.5, seconds_per_char=0.01)
    bots: list[Receptionist] = []

    def bot(info: CallInfo) -> list[Node]:
        bots.append(Receptionist(handoff, "+15550100"))
        return [bots[-1], WarmTransfer(consult)]

    server = CarrierServer(bot, carriers=["twilio"], host="127.0.0.1", port=0, call_control={"twilio": control})
    await server.start()
    try:
        async with TwilioTestClient(server.media_url("twilio")) as caller:
            deadline = time.monotonic() + 12
            while len(sent) < 2 and time.monotonic() < deadline:  # the caller waits on the line
                await caller.silence(0.5)
            await caller.stop()
    finally:
        await server.stop()
        await client.aclose()
    assert [r.url.path for _, r in sent] == ["/2010-04-01/Accounts/AC1/Calls.json",
                                             "/2010-04-01/Accounts/AC1/Calls/CA0001.json"], sent
    briefing = webhooks.form_params(sent[0][1].content.decode())
    assert briefing["To"] == "+15550100" and briefing["From"] == "+15550199"
    assert briefing["Twiml"].startswith("<Response><Say>") and SUMMARY in briefing["Twiml"]
    transfer = webhooks.form_params(sent[1][1].content.decode())
    assert transfer["Twiml"] == "<Response><Dial>+15550100</Dial></Response>"
    assert sent[1][0] - sent[0][0] >= 2.5  # the caller stayed on hold while the human was briefed
    assert windowed_match(handoff, caller.heard()) > 0.9
    assert heard_music(caller.heard()) > 0.9
    assert "transfer_accepted" in [kind for _, kind in bots[0].events]


def test_vonage_briefing_call_speaks_the_summary_with_an_inline_ncco() -> None:
    control = carrier_api.CallControl("vonage", carrier_api.CarrierCredentials(jwt="JWT"))
    request = consult_request(control, "sip:desk@pbx.example.com", "+15550199", SUMMARY)
    assert request is not None and request.method == "POST" and str(request.url) == "https://api.nexmo.com/v1/calls"
    assert request.headers["Authorization"] == "Bearer JWT"
    body = json.loads(request.content)
    assert body["to"] == [{"type": "sip", "uri": "sip:desk@pbx.example.com"}]
    assert body["ncco"] == [{"action": "talk", "text": SUMMARY}]
    telnyx = carrier_api.CallControl("telnyx", carrier_api.CarrierCredentials(api_key="K"))
    assert consult_request(telnyx, "+15550100", "+15550199", SUMMARY) is None  # needs a webhook round trip


class _Failing:
    async def __call__(self, target: str, text: str) -> bool:
        raise ConnectionError("no route to the front desk")


@pytest.mark.asyncio
async def test_a_failed_briefing_takes_the_caller_off_hold_or_transfers_blind() -> None:
    from agent.frames import EndFrame
    from transports.local import RecordingOutput

    for fallback, expect_transfer in (("return", False), ("blind", True)):
        out = RecordingOutput(sample_rate=8000)
        transfers: list[str] = []
        failures: list[dict[str, object]] = []

        class Spy(Node):
            async def process(self, frame: Frame, direction: int) -> None:
                if isinstance(frame, TransferFrame) and not isinstance(frame, WarmTransferFrame):
                    transfers.append(frame.target)
                if isinstance(frame, EventFrame) and frame.kind == "transfer_failed" and direction == UPSTREAM:
                    failures.append(frame.data)
                await self.emit(frame, direction)

        session = Session([Spy(), WarmTransfer(_Failing(), fallback=fallback), Spy(), out],
                          input_sample_rate=8000, output_sample_rate=8000)
        runner = asyncio.create_task(session.run())
        await session.started.wait()
        await session.push(WarmTransferFrame(target="+15550100", summary=SUMMARY))
        await asyncio.sleep(0.3)
        await session.push(EndFrame())
        await asyncio.wait_for(runner, 5)
        assert transfers == (["+15550100"] if expect_transfer else []), fallback
        assert bool(failures) is not expect_transfer, fallback
