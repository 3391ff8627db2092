"""Shared test set-up: make the repository root importable and quiet logs."""

import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
logging.getLogger("aioice").setLevel(logging.WARNING)

# The suite's servers read carrier secrets and LLM endpoints from the environment; a developer's
# own (a real TWILIO_AUTH_TOKEN, a VOXWIRE_LLM_BASE_URL) must not change what the tests see.
# Tests that want one set it themselves.
for _name in ("TWILIO_AUTH_TOKEN", "TELNYX_PUBLIC_KEY", "PLIVO_AUTH_TOKEN", "VONAGE_SIGNATURE_SECRET",
              "EXOTEL_WEBHOOK_USER", "EXOTEL_WEBHOOK_PASSWORD", "VOXWIRE_STREAM_SECRET",
              "VOXWIRE_WEBRTC_TOKEN", "VOXWIRE_LLM_BASE_URL", "VOXWIRE_LLM_MODEL", "VOXWIRE_LLM_API_KEY"):
    os.environ.pop(_name, None)
