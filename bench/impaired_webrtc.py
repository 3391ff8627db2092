"""One browser call over WebRTC for ``bench/impaired.py``: caller speech in, transcripts and stats out.

Headless Chromium calls a ``WebRTCServer`` running in this process; its fake
microphone plays the caller's sentences with pauses between them. The bot hears
them as the SIP bot does (Silero VAD → tiny.en Whisper) and answers every
utterance with a fixed line spoken by piper, so what the page recorded of the
bot can be transcribed back: the impairment is measured in both directions.

Both ends' statistics are kept: the server's aiortc ``getStats()`` (its
receiver's packets lost, jitter; the browser's receiver reports) and what
voxwire filled with silence where RTP timestamps jumped, what voxwire's audio
jitter buffer concealed, skipped or caught late, and the browser's
``getStats()`` (NetEQ's concealed samples, NACKs, packets lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "webrtc"))

#: What the bot says after each utterance it hears, in turn (the reference for the way back).
REPLIES = [
    "Thank you, I have written that down.",
    "Of course, let me check that for you.",
    "I am sorry to hear that, we can help.",
    "Sure, I will send it there today.",
    "No problem, I have moved your visit.",
    "Yes, there are free slots on Thursday.",
]
LEAD_S = 1.5  # silence before the first sentence (the call connects meanwhile)
PAUSE_S = 4.0  # between sentences: room for the bot's reply
TAIL_S = 6.0  # after the last sentence: its transcript and the whole reply
#: Stats fields worth reporting, per getStats() entry type (browser and aiortc use the same names).
STAT_FIELDS = {
    "inbound-rtp": ("packetsReceived", "packetsLost", "packetsDiscarded", "jitter", "nackCount",
                    "fecPacketsReceived", "concealedSamples", "silentConcealedSamples", "concealmentEvents",
                    "totalSamplesReceived", "jitterBufferDelay", "jitterBufferEmittedCount"),
    "outbound-rtp": ("packetsSent", "nackCount", "retransmittedPacketsSent"),
    "remote-inbound-rtp": ("packetsLost", "fractionLost", "roundTripTime", "jitter"),
}


def pick(entry: dict[str, Any]) -> dict[str, Any]:
    """The fields of one stats entry that say what loss and jitter did."""
    return {k: entry[k] for k in STAT_FIELDS.get(entry.get("type", ""), ()) if entry.get(k) is not None}


def audio_stats(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{type: fields}`` for the audio RTP entries of one getStats() report."""
    found: dict[str, dict[str, Any]] = {}
    for entry in entries:
        kind = entry.get("type")
        if kind in STAT_FIELDS and entry.get("kind", "audio") == "audio" and kind not in found:
            found[kind] = pick(entry) | ({"ssrc": entry["ssrc"]} if "ssrc" in entry else {})
    return found


async def aiortc_stats(pc: Any) -> dict[str, dict[str, Any]]:
    report = await pc.getStats()
    return audio_stats([dataclasses.asdict(s) | {"type": s.type} for s in report.values()])


def prewarm() -> None:
    """Load the models before the call, as a running server would have."""
    from stt import load_model, resolve_model
    from tts.piper import load_voice

    load_model(resolve_model(None), compute_type="int8")
    load_voice(None)


def transcribe_bot(audio: np.ndarray, rate: int) -> str:
    """What Whisper hears in the bot's channel of the page's recording, sound by sound."""
    from agent.audio import resample
    from stt import load_model, resolve_model, transcribe
    from webrtc_audio import segments

    model = load_model(resolve_model(None), compute_type="int8")
    pad = np.zeros(rate // 4, dtype=np.float32)
    texts = []
    for start, end in segments(audio, rate):
        clip = np.concatenate([pad, audio[int(start * rate):int(end * rate)], pad])
        texts.append(transcribe(model, resample(clip, rate, 16000).astype(np.float32))[0])
    return " ".join(t for t in texts if t)


async def run_call(sentences: list[str], workdir: Path, label: str) -> dict[str, Any]:
    """One Chromium call speaking ``sentences``; transcripts both ways and both ends' stats."""
    from agent.calls import CallInfo, CallManager
    from agent.frames import Frame, SpeakFrame, TranscriptionFrame
    from agent.node import Node
    from agent.vad import VADNode
    from stt.whisper import WhisperSTTNode
    from transports.ratelimit import HttpLimits
    from transports.webrtc import WebRTCServer, allow_loopback_candidates
    from transports.webrtc.browser import REPORT_PATH, HeadlessChromium, ReportCollector
    from transports.webrtc.jitter import jitter_stats
    from tts.piper import PiperTTSNode
    from webrtc_audio import caller_wav

    heard: list[str] = []
    said: list[str] = []

    class Answer(Node):
        """Keeps each final transcript and answers it with the next fixed reply."""

        async def process(self, frame: Frame, direction: int) -> None:
            await self.emit(frame, direction)
            if isinstance(frame, TranscriptionFrame) and frame.final and frame.text.strip():
                heard.append(frame.text)
                said.append(REPLIES[len(said) % len(REPLIES)])
                await self.emit(SpeakFrame(text=said[-1]))

    def bot(info: CallInfo) -> list[Node]:
        return [VADNode(), WhisperSTTNode(interims="off"), Answer(name="answer"), PiperTTSNode()]

    allow_loopback_candidates()
    await asyncio.to_thread(prewarm)
    wav = workdir / f"{label}-caller.wav"
    script = [(s, LEAD_S if i == 0 else PAUSE_S) for i, s in enumerate(sentences)] + [(None, TAIL_S)]
    spans = await asyncio.to_thread(caller_wav, wav, script)
    record_s = round(spans[-1][1] + TAIL_S, 1)

    manager = CallManager(bot)
    # The page posts its recording (~10 MB) to the report path: lift the body cap meant for offers.
    server = WebRTCServer(manager, "127.0.0.1", 0, http_limits=HttpLimits(max_body_bytes=0))
    collector = ReportCollector()
    collector.install(server.app)
    server_side: dict[str, Any] = {}
    calls: list[Any] = []
    manager.on_session(lambda session, info: calls.append(server.calls.get(info.session_id)))

    async def watch() -> None:
        while True:  # the last figures before the connection closes
            for call in list(server.calls.values()):
                if call.pc.connectionState == "connected":
                    with contextlib.suppress(Exception):  # closing meanwhile: keep the last figures
                        server_side["stats"] = await aiortc_stats(call.pc)
                    server_side["frames_received"] = call.input.frames_received
                    server_side["gap_samples_filled_48k"] = call.input.gap_samples_filled
                    server_side["jitter_buffer"] = [dataclasses.asdict(s) for s in jitter_stats(call.pc)]
            await asyncio.sleep(0.25)

    await server.start()
    collector.arm()
    url = server.url + "?" + urlencode({"autostart": 1, "record": record_s, "report": REPORT_PATH, "processing": 0})
    watcher = asyncio.create_task(watch())
    started = time.monotonic()
    try:
        async with HeadlessChromium(url, wav, log_path=workdir / f"{label}-browser.log"):
            report = await collector.wait(record_s + 60)
            deadline = time.monotonic() + 5
            while server.calls and time.monotonic() < deadline:  # the page hangs up after its report
                await asyncio.sleep(0.05)
    finally:
        watcher.cancel()
        await server.close()
        await manager.close()
    call = calls[0] if calls else None
    bot_text = await asyncio.to_thread(transcribe_bot, report.bot, report.sample_rate)
    return {
        "transcripts": heard, "bot_said": said, "bot_heard_by_caller": bot_text,
        "page_error": report.error, "close_reason": call.close_reason if call else None,
        "session_reason": manager.results[0].reason if manager.results else None,
        "connect_ms": round((call.timings["connected"] - call.timings["offer"]) * 1000, 1)
        if call and "connected" in call.timings else None,
        "call_s": round(time.monotonic() - started, 1), "recorded_s": round(len(report.audio) / report.sample_rate, 1),
        "server": server_side, "browser": audio_stats(report.stats),
    }
