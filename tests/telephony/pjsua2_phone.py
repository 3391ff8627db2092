"""A real softphone for the tests: PJSIP's pjsua2, in its own process.

pjsua2 keeps a global endpoint, its own threads (the null sound device's
clock) and C state that must be torn down in order; a child process keeps
all of that out of pytest. It talks to the test on stdout, one JSON object
per line (``{"event": "ready", "port": 5071}``, ``confirmed``, ``speaking``,
``disconnected`` with RTP statistics, ``done``), and is driven by argv:

    python pjsua2_phone.py call sip:bot@127.0.0.1:5080 --play question.wav --record heard.wav
    python pjsua2_phone.py answer --record heard.wav

It behaves like a person on a phone rather than a clock: in ``call`` mode it
waits for the far end's greeting to finish (received level quiet for
``--quiet-s``) before it plays its WAV, then waits for the answer to finish
before it hangs up. In ``answer`` mode it auto-answers the first INVITE with
200, records, and exits when the far end hangs up (or at ``--max-s``).

Setup from ``shared/docs/real-peers.md``: the null audio device, SIP and RTP
bound to and advertised as 127.0.0.1, PCMU only (plus telephone-event), no
silence suppression. PJSIP locks onto the address RTP arrives from, so the
far end must send from the port it receives on (symmetric RTP).

Only the standard library and pjsua2 are imported: it runs with any Python
that has the ``pjsua2-python`` wheel.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import wave
from typing import Any

import pjsua2 as pj

HOST = "127.0.0.1"


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "t": round(time.monotonic(), 3), **fields}), flush=True)


class Phone:
    """One endpoint, one account, at most one call; everything runs on this thread."""

    def __init__(self, port: int, log_level: int) -> None:
        self.ep = pj.Endpoint()
        self.ep.libCreate()
        config = pj.EpConfig()
        config.uaConfig.threadCnt = 0  # SIP events only inside handle(): no Python callbacks on pjsip threads
        config.uaConfig.mainThreadOnly = True
        config.uaConfig.userAgent = "pjsua2-test-phone"
        config.uaConfig.stunServer.clear()
        config.logConfig.level = log_level
        config.logConfig.consoleLevel = log_level
        config.medConfig.noVad = True  # send every 20 ms frame, as a phone on a line does
        config.medConfig.ecTailLen = 0
        config.medConfig.clockRate = 8000
        config.medConfig.sndClockRate = 8000
        self.ep.libInit(config)
        transport = pj.TransportConfig()
        transport.port = port
        transport.boundAddress = HOST
        transport.publicAddress = HOST
        self.ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
        self.ep.libStart()
        self.ep.audDevManager().setNullDev()
        for codec in self.ep.codecEnum2():
            keep = codec.codecId.startswith(("PCMU/8000", "telephone-event"))
            self.ep.codecSetPriority(codec.codecId, 255 if keep else 0)
        self.port = self.ep.transportGetInfo(0).localName.rsplit(":", 1)[1] if port == 0 else str(port)
        account = pj.AccountConfig()
        account.idUri = f"sip:phone@{HOST}:{self.port}"
        account.mediaConfig.transportConfig.boundAddress = HOST
        account.mediaConfig.transportConfig.publicAddress = HOST
        account.natConfig.sdpNatRewriteUse = 0
        account.natConfig.contactRewriteUse = 0
        account.natConfig.viaRewriteUse = 0
        self.account = Account(self)
        self.account.create(account)
        self.call: Call | None = None
        self.recorder: pj.AudioMediaRecorder | None = None
        self.player: pj.AudioMediaPlayer | None = None
        self.record_path: str | None = None

    def handle(self, seconds: float) -> None:
        """Run pjsip's events (and our callbacks) for about ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.ep.libHandleEvents(10)

    def audio(self) -> pj.AudioMedia | None:
        return self.call.audio if self.call is not None else None

    def play(self, path: str) -> float:
        """Start sending ``path`` into the call; returns its duration in seconds."""
        audio = self.audio()
        assert audio is not None
        self.player = pj.AudioMediaPlayer()
        self.player.createPlayer(path, pj.PJMEDIA_FILE_NO_LOOP)
        self.player.startTransmit(audio)
        with wave.open(path, "rb") as wav:
            return wav.getnframes() / wav.getframerate()

    def stop_playing(self) -> None:
        audio = self.audio()
        if self.player is not None and audio is not None:
            self.player.stopTransmit(audio)

    def close(self) -> None:
        if self.call is not None and self.call.isActive():
            self.call.hangup(pj.CallOpParam(True))
            self.handle(0.3)
        self.recorder = self.player = None  # the recorder's WAV header is finalised when it is destroyed
        self.call = None
        self.ep.libDestroy()


class Account(pj.Account):
    def __init__(self, phone: Phone) -> None:
        super().__init__()
        self.phone = phone

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        call = Call(self.phone, self, prm.callId)
        if self.phone.call is not None:  # one call at a time: busy
            busy = pj.CallOpParam()
            busy.statusCode = 486
            call.hangup(busy)
            return
        self.phone.call = call
        info = call.getInfo()
        emit("incoming", remote=info.remoteUri, call_id=info.callIdString)
        answer = pj.CallOpParam()
        answer.statusCode = 200
        call.answer(answer)


class Call(pj.Call):
    def __init__(self, phone: Phone, account: Account, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(account, call_id)
        self.phone = phone
        self.audio: pj.AudioMedia | None = None
        self.confirmed_at: float | None = None
        self.ended_reason: str | None = None

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.confirmed_at = time.monotonic()
            emit("confirmed", call_id=info.callIdString, remote=info.remoteUri)
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.ended_reason = f"{info.lastStatusCode} {info.lastReason}"
            emit("disconnected", reason=self.ended_reason)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        info = self.getInfo()  # keep it alive: ``media`` is a view into it
        for media in info.media:
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self.audio = self.getAudioMedia(media.index)
                if self.phone.record_path and self.phone.recorder is None:
                    self.phone.recorder = pj.AudioMediaRecorder()
                    self.phone.recorder.createRecorder(self.phone.record_path)
                    self.audio.startTransmit(self.phone.recorder)
                emit("media", codec=self._codec(media.index))

    def onStreamDestroyed(self, prm: pj.OnStreamDestroyedParam) -> None:
        emit("rtp", **self._rtp_stats(prm.streamIdx))

    def _codec(self, index: int) -> str:
        try:
            return str(self.getStreamInfo(index).codecName)
        except pj.Error:
            return ""

    def _rtp_stats(self, index: int) -> dict[str, int]:
        try:
            rtcp = self.getStreamStat(index).rtcp
        except pj.Error:
            return {}
        return {"rx_packets": int(rtcp.rxStat.pkt), "tx_packets": int(rtcp.txStat.pkt),
                "rx_lost": int(rtcp.rxStat.loss)}


class Listener:
    """Follows the far end's level: was it heard, and how long has it been quiet?

    The level is the call port's *tx* level: what the port transmits into the
    conference bridge, i.e. the audio received from the far end (its rx level
    is what we send). Measured only while the port feeds a listener (the recorder).
    """

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.heard_at: float | None = None
        self.loud_at: float | None = None

    def poll(self, audio: pj.AudioMedia) -> None:
        if audio.getTxLevel() > self.threshold:
            now = time.monotonic()
            self.heard_at = self.heard_at or now
            self.loud_at = now

    def finished_speaking(self, quiet_s: float) -> bool:
        return self.loud_at is not None and time.monotonic() - self.loud_at >= quiet_s


def wait_for(phone: Phone, predicate: Any, timeout: float, listener: Listener | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        phone.handle(0.02)
        audio = phone.audio()
        if listener is not None and audio is not None:
            listener.poll(audio)
        if predicate():
            return True
    return False


def hung_up(phone: Phone) -> bool:
    return phone.call is not None and phone.call.ended_reason is not None


def run_call(phone: Phone, args: argparse.Namespace) -> int:
    phone.call = Call(phone, phone.account)
    phone.call.makeCall(args.target, pj.CallOpParam(True))
    if not wait_for(phone, lambda: phone.call.confirmed_at is not None or hung_up(phone), args.answer_timeout_s):
        emit("error", reason="not answered")
        return 2
    if hung_up(phone):
        emit("error", reason=f"refused: {phone.call.ended_reason}")
        return 2
    listener = Listener(args.level)
    if args.play:
        # The greeting first: speak once the far end has spoken and paused (or it stays silent).
        wait_for(phone, lambda: listener.finished_speaking(args.quiet_s) or hung_up(phone), args.greeting_timeout_s,
                 listener)
        if hung_up(phone):
            return 0
        emit("speaking", greeted=listener.heard_at is not None)
        seconds = phone.play(args.play)
        wait_for(phone, lambda: hung_up(phone), seconds + 0.1, listener)
        phone.stop_playing()
        emit("spoke", seconds=round(seconds, 2))
        # The answer: wait until the far end starts again after our question, then goes quiet.
        asked_at = time.monotonic()
        wait_for(phone, lambda: hung_up(phone) or (listener.loud_at or 0) > asked_at + 0.3, args.answer_s, listener)
    wait_for(phone, lambda: hung_up(phone) or listener.finished_speaking(args.quiet_s + 0.7), args.answer_s, listener)
    if not hung_up(phone):
        phone.call.hangup(pj.CallOpParam(True))
        wait_for(phone, lambda: hung_up(phone), 3.0)
    return 0


def run_answer(phone: Phone, args: argparse.Namespace) -> int:
    if not wait_for(phone, lambda: phone.call is not None, args.answer_timeout_s):
        emit("error", reason="no call came in")
        return 2
    wait_for(phone, lambda: hung_up(phone), args.max_s)
    if not hung_up(phone):
        emit("timeout", after_s=args.max_s)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("mode", choices=("call", "answer"))
    parser.add_argument("target", nargs="?", help="SIP URI to call (call mode)")
    parser.add_argument("--port", type=int, default=0, help="local SIP UDP port (0: any)")
    parser.add_argument("--play", help="16-bit mono WAV to say into the call (call mode)")
    parser.add_argument("--record", help="WAV file to record what the far end sends")
    parser.add_argument("--quiet-s", type=float, default=0.8, help="silence that ends the far end's turn")
    parser.add_argument("--level", type=int, default=12, help="received level (0-255) that counts as speech")
    parser.add_argument("--answer-timeout-s", type=float, default=10.0)
    parser.add_argument("--greeting-timeout-s", type=float, default=15.0)
    parser.add_argument("--answer-s", type=float, default=20.0, help="longest wait for the far end's answer")
    parser.add_argument("--max-s", type=float, default=30.0, help="answer mode: longest call")
    parser.add_argument("--log-level", type=int, default=1)
    args = parser.parse_args(argv)
    if args.mode == "call" and not args.target:
        parser.error("call mode needs a target URI")
    phone = Phone(args.port, args.log_level)
    phone.record_path = args.record
    emit("ready", port=int(phone.port), version=phone.ep.libVersion().full)
    try:
        code = run_call(phone, args) if args.mode == "call" else run_answer(phone, args)
    finally:
        phone.close()
    emit("done", code=code)
    return code


if __name__ == "__main__":
    sys.exit(main())
