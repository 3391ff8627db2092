"""Shared test set-up: make the repository root importable and quiet logs."""

import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
logging.getLogger("aioice").setLevel(logging.WARNING)
