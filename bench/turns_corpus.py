"""Caller speech for the turn-taking bench and tests, synthesized locally.

Utterances are written as spoken; ``|`` marks a mid-sentence pause at a
natural continuation point (before a number group, after "my name is", at a
clause boundary). Each part is synthesized on its own, the first ending in a
comma, and the parts are joined by silence of an exact length, so the pause a
turn-taker must survive is known to the millisecond.

Two engines (piper and espeak-ng, several voices) keep the set from being one
voice's quirks. Every fifth utterance goes through a phone line: 8 kHz G.711
μ-law with white noise at -35 dBFS. WER is scored format-insensitively: number
words and digits both become single digits ("five five five" = "555"), so
"March third" and "March 3rd" agree.
"""

from __future__ import annotations

import io
import re
import subprocess
from dataclasses import dataclass, field

import numpy as np
import soxr

from agent.audio import ulaw_decode, ulaw_encode

RATE = 16000
PHONE_RATE = 8000

#: Spoken text. "|" is a pause where the words so far cannot end the sentence
#: (after "is", "for", "um", inside a phone number); "/" a pause at a clause
#: boundary, where they could ("I have an appointment on Monday, / but ...").
#: The reference transcript is the text without the marks.
UTTERANCES: list[str] = [
    "Yes.",
    "What are your opening hours?",
    "I'd like to book an appointment for | my son.",
    "No, thank you.",
    "My phone number is | five five five, | one two three, | four five six seven.",
    "Do you take walk in patients?",
    "I need to cancel my appointment.",
    "My name is | Sarah Johnson.",
    "Where can I park?",
    "My date of birth is | March third, nineteen eighty five.",
    "That works for me.",
    "I was wondering if | you could move my appointment to Thursday.",
    "Is Doctor Patel available on Friday?",
    "Um, | I think I lost my insurance card.",
    "My daughter has a fever and a sore throat.",
    "Can you tell me | what time the pharmacy closes?",
    "The appointment is on the | twenty first at two thirty.",
    "Okay.",
    "I need a refill for | my blood pressure medication.",
    "How much does a checkup cost?",
    "My member number is | four eight two one three.",
    "I'm calling about my test results.",
    "The address is | forty two Maple Street.",
    "Can I come in at nine fifteen tomorrow?",
    "I have an appointment on Monday, / but I can't make it.",
    "Please transfer me to the front desk.",
    "Could you send the forms to | my email address?",
    "Call me back at | two one two, | five five five, | zero one nine nine.",
    "I've had a headache for three days and I'd like to see someone this week.",
    "Tuesday.",
    "I'd prefer the morning, / if that's possible.",
    "Sorry, could you repeat that?",
    "I'll be there at | quarter past ten.",
    "Does the clinic do blood tests on Saturday?",
    "Actually, | I need two appointments, one for me and | one for my wife.",
    "I got a letter about a missed appointment, and I don't think I missed it.",
    "I'm not sure, / maybe next week?",
    "Can you check whether my insurance covers the flu shot?",
    "It's for my son, and | he's seven.",
    "Right, and what should I bring?",
]

#: Mid-sentence pause lengths (ms), cycled over the pauses in order.
PAUSES_MS = (300, 450, 600, 380, 520, 340, 560, 410)

BACKCHANNELS = ["Mm-hmm.", "Uh-huh.", "Yeah.", "Okay.", "Right.", "Mhm.", "Hmm.", "Yes."]
INTERRUPTIONS = [
    "Wait, stop.",
    "Sorry, can I ask something else?",
    "No, that's not what I meant.",
    "Hold on a second, please.",
    "What about Saturday instead?",
    "Excuse me, I have a question.",
    "Actually, I need to go now.",
    "Can you repeat the last part?",
]
ESPEAK_VOICES = ("en-us", "en-us+m3", "en-gb", "en-us+f3")


@dataclass(slots=True)
class Utterance:
    """One caller utterance, ready to play at ``rate``."""

    text: str
    pcm: np.ndarray
    rate: int
    engine: str
    phone: bool = False
    pauses_ms: list[int] = field(default_factory=list)
    boundary_pause: bool = False  # a pause where the words before it form a sentence

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / self.rate


# ------------------------------------------------------------------ synthesis


def piper_speech(text: str, rate: int = RATE, volume: float = 0.5) -> np.ndarray:
    from tts.piper import load_voice, synthesize_blocking

    voice = load_voice()
    native = synthesize_blocking(voice, text, volume=volume)
    return np.asarray(soxr.resample(native, voice.config.sample_rate, rate), dtype=np.int16)


def espeak_speech(text: str, rate: int = RATE, voice: str = "en-us", wpm: int = 165) -> np.ndarray:
    """espeak-ng (Debian package) through its WAV output, peak-normalised to -6 dBFS."""
    import soundfile

    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(wpm), "--stdout", text], capture_output=True, check=True
    ).stdout
    audio, native = soundfile.read(io.BytesIO(wav), dtype="float32")
    audio = soxr.resample(audio, native, rate)
    peak = float(np.max(np.abs(audio))) or 1.0
    return (audio * (0.5 / peak) * 32767).astype(np.int16)


def trim(samples: np.ndarray, threshold: int = 100) -> np.ndarray:
    """Cut leading and trailing near-silence (below about -50 dBFS)."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    return samples[loud[0] : loud[-1] + 1] if len(loud) else samples


def speak(text: str, engine: str = "piper", voice: str = "en-us", pauses_ms: list[int] | None = None) -> np.ndarray:
    """``text`` at 16 kHz; each ``|`` or ``/`` becomes an exact pause (the part before it ends in a comma)."""
    parts = [p.strip() for p in re.split(r"[|/]", text)]
    pauses = list(pauses_ms or [])
    out: list[np.ndarray] = []
    for i, part in enumerate(parts):
        if i < len(parts) - 1 and not part.endswith(","):
            part += ","
        pcm = piper_speech(part) if engine == "piper" else espeak_speech(part, voice=voice)
        out.append(trim(pcm))
        if i < len(parts) - 1:
            out.append(np.zeros(int(RATE * pauses[i] / 1000), dtype=np.int16))
    return np.concatenate(out)


def to_phone_rate(samples: np.ndarray) -> np.ndarray:
    """16 kHz speech at the 8 kHz a phone line carries (the line adds noise and μ-law)."""
    return np.asarray(soxr.resample(samples, RATE, PHONE_RATE), dtype=np.int16)


def phone_line(samples: np.ndarray, rate: int = RATE, noise_dbfs: float = -35.0, seed: int = 3) -> np.ndarray:
    """8 kHz G.711 μ-law with white line noise; returns int16 at 8 kHz."""
    narrow = np.asarray(soxr.resample(samples, rate, PHONE_RATE), dtype=np.float64)
    if noise_dbfs is not None:
        narrow = narrow + noise(len(narrow), noise_dbfs, seed)
    narrow = np.clip(narrow, -32768, 32767).astype(np.int16)
    return np.frombuffer(ulaw_decode(ulaw_encode(narrow)), dtype=np.int16).copy()


def noise(n: int, dbfs: float, seed: int = 0) -> np.ndarray:
    """White noise of RMS ``dbfs`` (float64, int16 scale)."""
    return np.random.default_rng(seed).standard_normal(n) * 32768 * 10 ** (dbfs / 20)


def noise_burst(seconds: float, rate: int, dbfs: float = -25.0, seed: int = 0, kind: str = "white") -> np.ndarray:
    """A noise burst with 10 ms fades: white, or low-passed rumble (a door, a bump)."""
    n = int(seconds * rate)
    wave = noise(n, 0.0, seed)
    if kind == "rumble":
        wave = np.convolve(wave, np.ones(16) / 16, mode="same")
    wave *= 32768 * 10 ** (dbfs / 20) / (np.sqrt(np.mean(wave**2)) or 1.0)
    fade = min(n // 2, int(0.01 * rate))
    ramp = np.linspace(0.0, 1.0, fade)
    wave[:fade] *= ramp
    wave[n - fade :] *= ramp[::-1]
    return np.clip(wave, -32768, 32767).astype(np.int16)


def build_corpus(limit: int | None = None) -> list[Utterance]:
    """The bench's caller utterances: 16 kHz, or 8 kHz for every fifth (played over a phone line)."""
    corpus: list[Utterance] = []
    pause_cycle = iter(PAUSES_MS * 10)
    for i, text in enumerate(UTTERANCES[:limit]):
        pauses = [next(pause_cycle) for _ in range(len(re.findall(r"[|/]", text)))]
        engine = "espeak" if i % 4 == 3 else "piper"
        voice = ESPEAK_VOICES[(i // 4) % len(ESPEAK_VOICES)]
        pcm = speak(text, engine, voice, pauses)
        phone = i % 5 == 4
        if phone:  # the caller adds the line itself (continuous noise, μ-law)
            pcm = to_phone_rate(pcm)
        corpus.append(Utterance(
            text=re.sub(r"\s*[|/]", "", text), pcm=pcm, rate=PHONE_RATE if phone else RATE,
            engine=engine if engine == "piper" else f"espeak:{voice}", phone=phone, pauses_ms=pauses,
            boundary_pause="/" in text,
        ))
    return corpus


# -------------------------------------------------------------------- scoring

_UNITS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine".split())}
_TEENS = {w: i + 10 for i, w in enumerate(
    "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: (i + 2) * 10 for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
_ORDINALS = {"first": "one", "second": "two", "third": "three", "fourth": "four", "fifth": "five",
             "sixth": "six", "seventh": "seven", "eighth": "eight", "ninth": "nine", "tenth": "ten",
             "eleventh": "eleven", "twelfth": "twelve", "twentieth": "twenty", "thirtieth": "thirty"}
_SPELLING = {"ok": "okay", "dr": "doctor", "mhm": "mm", "hmm": "mm"}


def _number_value(words: list[str]) -> list[str]:
    """A run of number words as digit strings ("twenty one" → 21, "nineteen eighty" → 19 80)."""
    out: list[str] = []
    current: int | None = None
    for word in words:
        if word in ("hundred", "thousand"):
            current = (current or 1) * (100 if word == "hundred" else 1000)
            continue
        value = _UNITS.get(word, _TEENS.get(word, _TENS.get(word)))
        if value is None:
            continue
        if current is not None and current % 100 == 0 and current >= 100 and value < 100:
            current += value
        elif current is not None and current in _TENS.values() and value < 10:
            current += value
        else:
            if current is not None:
                out.append(str(current))
            current = value
    if current is not None:
        out.append(str(current))
    return out


def normalize(text: str) -> list[str]:
    """Lower-case word tokens; numbers in any format become single digits."""
    text = text.lower().replace("a.m.", "am").replace("p.m.", "pm")
    tokens = re.findall(r"[a-z']+|\d+", text.replace("-", " "))
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        for number in _number_value(run):
            out.extend(number)
        run.clear()

    for token in tokens:
        token = _ORDINALS.get(token, _SPELLING.get(token, token))
        if token in ("st", "nd", "rd", "th") and out and out[-1].isdigit():
            continue  # "3rd"
        if token == "oh" and (run or (out and out[-1].isdigit())):
            token = "zero"
        if token in _UNITS or token in _TEENS or token in _TENS or (token in ("hundred", "thousand") and run):
            run.append(token)
            continue
        flush()
        if token.isdigit():
            out.extend(token)
        else:
            out.append(token)
    flush()
    return out


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER (jiwer) after :func:`normalize`."""
    import jiwer

    refs = [" ".join(normalize(r)) or "<empty>" for r in references]
    hyps = [" ".join(normalize(h)) or "<empty>" for h in hypotheses]
    return float(jiwer.wer(refs, hyps))
