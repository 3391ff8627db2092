"""Call artefacts: a stereo recording and a PNG timeline of who spoke when."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def place(chunks: Sequence[tuple[float, bytes]], t0: float, rate: int, length_s: float) -> np.ndarray:
    """Lay timestamped int16 chunks onto one track starting at ``t0``."""
    track = np.zeros(int(length_s * rate) + rate, dtype=np.int16)
    for t, pcm in chunks:
        samples = np.frombuffer(pcm, dtype=np.int16)
        start = int(round((t - t0) * rate))
        if 0 <= start < len(track):
            end = min(start + len(samples), len(track))
            track[start:end] = samples[: end - start]
    return track


def write_stereo(path: str, left: np.ndarray, right: np.ndarray, rate: int) -> None:
    import soundfile

    n = max(len(left), len(right))
    stereo = np.zeros((n, 2), dtype=np.int16)
    stereo[: len(left), 0] = left
    stereo[: len(right), 1] = right
    soundfile.write(path, stereo, rate, subtype="PCM_16")


def activity(track: np.ndarray, rate: int, threshold_dbfs: float = -45.0) -> list[tuple[float, float]]:
    """Spans (start_s, end_s) where a track is audible, in 20 ms steps."""
    step = rate // 50
    frames = track[: len(track) // step * step].reshape(-1, step).astype(np.float64)
    level = 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) / 32768.0 + 1e-12)
    loud = level > threshold_dbfs
    spans: list[tuple[float, float]] = []
    start = None
    for i, on in enumerate(loud):
        if on and start is None:
            start = i
        elif not on and start is not None:
            if spans and (start - spans[-1][1] * 50) < 8:  # bridge gaps < 160 ms
                spans[-1] = (spans[-1][0], i / 50)
            else:
                spans.append((start / 50, i / 50))
            start = None
    if start is not None:
        spans.append((start / 50, len(loud) / 50))
    return spans


def draw_timeline(path: str, lanes: dict[str, list[tuple[float, float]]], labels: list[tuple[float, str, str]],
                  length_s: float) -> None:
    """Lanes of activity bars plus labelled markers (time, lane, text)."""
    from PIL import Image, ImageDraw

    width, lane_h, left = 1400, 70, 90
    height = 60 + lane_h * len(lanes) + 20 * (len(labels) + 1)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    scale = (width - left - 20) / max(length_s, 1.0)
    colors = {"caller": (52, 120, 246), "bot": (46, 160, 90)}
    for second in range(int(length_s) + 1):
        x = left + second * scale
        draw.line([(x, 30), (x, 30 + lane_h * len(lanes))], fill=(225, 225, 225))
        if second % 5 == 0:
            draw.text((x - 6, 12), f"{second}s", fill="black")
    for row, (lane, spans) in enumerate(lanes.items()):
        y = 40 + row * lane_h
        draw.text((8, y + 18), lane, fill="black")
        for start, end in spans:
            draw.rectangle([left + start * scale, y, left + end * scale, y + lane_h - 25],
                           fill=colors.get(lane, (120, 120, 120)))
    lanes_list = list(lanes)
    for i, (t, lane, text) in enumerate(labels):
        x = left + t * scale
        row = lanes_list.index(lane) if lane in lanes_list else 0
        draw.line([(x, 40 + row * lane_h), (x, 40 + row * lane_h + lane_h - 25)], fill=(220, 40, 40), width=2)
        y = 40 + lane_h * len(lanes) + 10 + 20 * i
        draw.text((x + 3, y), f"{t:.2f}s {text}", fill=(180, 20, 20))
    image.save(path)
