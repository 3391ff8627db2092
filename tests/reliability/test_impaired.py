"""Calls through 5 % loss and 40 ± 10 ms jitter: the caller's words survive, the bot is still heard.

Runs ``bench/impaired.py`` (NFQUEUE in a private network namespace) for SIP/RTP
(sipp; about 80 s) and WebRTC (headless Chromium; about 130 s), so it is
opt-in: ``VOXWIRE_IMPAIRED=1``. Needs root, iptables, sipp, chromium and
``netfilterqueue`` (apt ``libnetfilter-queue-dev``; pip ``netfilterqueue==1.1.0``;
``make test-impaired`` installs them and runs this file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import OUT

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.environ.get("VOXWIRE_IMPAIRED") != "1",
                                reason="about 4 minutes; opt in with VOXWIRE_IMPAIRED=1")


def run_bench(transport: str) -> dict[str, Any]:
    """``bench/impaired.py --transport ...``'s report (skips when this machine cannot run it)."""
    proc = subprocess.run([sys.executable, "bench/impaired.py", "--transport", transport, "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=400)
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-2000:]
    report = json.loads(lines[-1])
    if "skipped" in report:
        pytest.skip(report["skipped"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"impaired_{transport}.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def test_sip_call_under_loss_and_jitter_keeps_the_transcript(tally: Counter[str]) -> None:
    report = run_bench("sip")
    tally["impaired rtp packets"] += report["rtp_packets_seen"]
    assert 0.03 <= report["measured_loss"] <= 0.08  # the impairment really happened
    assert report["jitter_buffer_impaired"]["received"] < report["jitter_buffer_clean"]["received"]
    assert report["wer_delta_points"] <= 2.0, report


@pytest.fixture(scope="module")
def webrtc() -> dict[str, Any]:
    return run_bench("webrtc")


def test_webrtc_call_under_loss_and_jitter_completes_and_the_bot_is_heard(
    webrtc: dict[str, Any], tally: Counter[str]
) -> None:
    tally["impaired rtp packets"] += webrtc["rtp_packets_seen"]
    for run in ("clean", "impaired"):  # both calls ran to the page's own hang-up
        call = webrtc[run]
        assert call["page_error"] is None and call["close_reason"] == "caller_hangup", call
        assert len(webrtc[f"transcripts_{run}"]) >= webrtc["sentences"] - 1, webrtc[f"transcripts_{run}"]
    # Both directions really crossed the impaired path.
    assert 0.03 <= webrtc["measured_loss"] <= 0.08
    assert webrtc["rtp_caller_to_bot"]["dropped"] > 0 and webrtc["rtp_bot_to_caller"]["dropped"] > 0
    assert webrtc["impaired"]["server"]["stats"]["inbound-rtp"]["packetsLost"] > 0
    # The browser's jitter buffer concealed the lost packets, and the bot's replies are still understood.
    browser = webrtc["impaired"]["browser"]["inbound-rtp"]
    assert browser["packetsLost"] > 0 and browser["concealmentEvents"] > 0
    # (Load on the shared 2-core machine alone cost a clean run 16 %: server stalls drop bot frames.)
    assert webrtc["bot_wer_impaired"] <= 0.25, (webrtc["impaired"]["bot_said"], webrtc["impaired"]["bot_heard_by_caller"])


def test_webrtc_caller_transcript_survives_loss_and_jitter(webrtc: dict[str, Any]) -> None:
    assert webrtc["wer_delta_points"] <= 2.0, (webrtc["transcripts_clean"], webrtc["transcripts_impaired"])
    # voxwire's jitter buffer, not luck: lost caller packets were concealed, not filled with silence.
    server = webrtc["impaired"]["server"]
    assert server["jitter_buffer"] and server["jitter_buffer"][0]["concealed"] > 0
    assert server["gap_samples_filled_48k"] < 48000 // 10, server
