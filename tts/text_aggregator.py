"""Cut a stream of LLM text deltas into clauses a TTS can start speaking.

Time to first audio is decided here: the first clause goes to synthesis the
moment it is known to be complete. Unlike aggregators that hold every full
stop until the next character arrives, a boundary is taken at once when it is
unambiguous — "?", "!", a full stop after a word that is not an abbreviation
or initial, a newline — and a comma, semicolon, colon or dash ends a clause
once enough words have gathered (few for the first clause of a turn, more
later, so the rest of the answer keeps sentence-level prosody). Only a full
stop or comma right after a digit waits for the next character ("3.5",
"1,000").
"""

from __future__ import annotations

import re

_SENTENCE_END = ".!?…"
_CLAUSE_END = ",;:—–"
_CLOSERS = "\"'”’)]}»"
#: Words that end in a full stop without ending a sentence.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt vs etc eg ie e.g i.e a.m p.m approx dept est fig "
    "inc ltd corp vol jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
_MARKUP = re.compile(r"[*_`#]+|^\s*[-•]\s+", re.MULTILINE)
_WORD = re.compile(r"[^\W_]", re.UNICODE)
_FINISHED_WORD = re.compile(r"\S+\s+")


def clean_for_speech(text: str) -> str:
    """Drop markdown emphasis, headings and bullets that a voice would read out."""
    return _MARKUP.sub("", text)


class ClauseAggregator:
    """``push`` deltas, get back the clauses they completed; ``flush`` at turn end."""

    def __init__(
        self,
        *,
        first_clause_min_words: int = 4,
        clause_min_words: int = 10,
        max_words: int = 40,
    ) -> None:
        if not 1 <= first_clause_min_words <= max_words and clause_min_words >= 1:
            raise ValueError("need 1 <= first_clause_min_words <= max_words and clause_min_words >= 1")
        self.first_clause_min_words = first_clause_min_words
        self.clause_min_words = clause_min_words
        self.max_words = max_words
        self._buffer = ""
        self._scanned = 0  # characters of _buffer already checked for a boundary
        self._clauses_out = 0

    def reset(self) -> None:
        """Forget pending text and start a new turn (after an interrupt)."""
        self._buffer, self._scanned, self._clauses_out = "", 0, 0

    def push(self, delta: str) -> list[str]:
        """Add a delta; return every clause it completed, in order."""
        self._buffer += delta
        clauses: list[str] = []
        while (cut := self._find_cut()) is not None:
            clause, self._buffer = self._buffer[:cut], self._buffer[cut:]
            self._scanned = 0
            self._take(clause, clauses)
        return clauses

    def flush(self) -> list[str]:
        """The end of the turn: whatever is left is the last clause."""
        clauses: list[str] = []
        self._take(self._buffer, clauses)
        self.reset()
        return clauses

    def split(self, text: str) -> list[str]:
        """Clauses of a complete text (a ``SpeakFrame``), as a turn of its own."""
        self.reset()
        return self.push(text) + self.flush()

    # ------------------------------------------------------------ internals

    def _take(self, clause: str, into: list[str]) -> None:
        spoken = " ".join(clean_for_speech(clause).split())
        if _WORD.search(spoken):  # punctuation-only leftovers ("..", "—") are not spoken
            into.append(spoken)
            self._clauses_out += 1

    def _find_cut(self) -> int | None:
        """Index just past the first complete clause in the buffer, if any."""
        text = self._buffer
        min_words = self.first_clause_min_words if self._clauses_out == 0 else self.clause_min_words
        for i in range(self._scanned, len(text)):
            char = text[i]
            if char == "\n":
                if text[:i].strip():
                    return i + 1
                continue
            end = self._boundary_end(text, i)
            if end is None:
                if char in _SENTENCE_END or char in _CLAUSE_END:
                    self._scanned = i  # undecided: look again when more text arrives
                    return None
                continue
            if end < 0:
                continue
            if char in _SENTENCE_END or _count_words(text[:i]) >= min_words:
                return end
        self._scanned = len(text)
        return self._cut_long_run(text)

    def _cut_long_run(self, text: str) -> int | None:
        """After ``max_words`` finished words without punctuation, cut at a word end."""
        finished = 0
        for word in _FINISHED_WORD.finditer(text):
            finished += 1
            if finished == self.max_words:
                return word.end()
        return None

    def _boundary_end(self, text: str, i: int) -> int | None:
        """Where a clause ending at ``text[i]`` ends; -1 if it is not an end; None if unknown yet."""
        char = text[i]
        if char not in _SENTENCE_END and char not in _CLAUSE_END:
            return -1
        j = i + 1
        while j < len(text) and text[j] in _CLOSERS + _SENTENCE_END:
            j += 1  # "?!", '."', "...", ")." belong to the clause they close
        if j < len(text):
            return j if text[j].isspace() and not _is_abbreviation(text, i) else -1
        # Nothing after the mark yet: decide now if the mark is unambiguous.
        before = text[i - 1] if i > 0 else ""
        if char in ".,:" and before.isdigit():
            return None  # "3." may become "3.5", "1," "1,000", "9:" "9:30"
        if char == "." and _is_abbreviation(text, i):
            return None  # "Dr." then " Smith" — wait for the next word
        return j


def _is_abbreviation(text: str, dot: int) -> bool:
    if text[dot] != ".":
        return False
    start = dot
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    word = text[start:dot].lower().strip("\"'(")
    if len(word) == 1 and word.isalpha():
        return True  # an initial: "J. Smith"
    return word in _ABBREVIATIONS


def _count_words(text: str) -> int:
    return sum(1 for word in text.split() if _WORD.search(word))
