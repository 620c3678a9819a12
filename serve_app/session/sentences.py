"""Cut a token stream into speakable pieces: the first clause early, then whole sentences.

Speech starts as soon as the first piece is synthesised, so the first piece is short: a clause
(up to a comma, colon, semicolon or dash, once it has a few words) or the first 6 words,
whichever comes first: each word fewer is ~1.4 tokens less to wait for and a shorter Piper run
(8 words gave 0.55-0.77 s from the first token to the first audio, 6 give 0.23-0.39 s). After
that, whole sentences, which Piper phrases better.
"""

from __future__ import annotations

import re

_BOUNDARY = re.compile(r"(?<=[.!?…])[\"')\]]*\s+|\n+")
_CLAUSE = re.compile(r"(?<=[,;:])\s+|\s+[-–—]+\s+")
_ABBREVIATIONS = {"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "e.g.", "i.e.", "etc.", "prof.", "jr.", "sr."}
MIN_SENTENCE_CHARS = 8  # "Yes." alone is fine to speak, but "3." from a list is not worth a TTS call
_MARKUP = re.compile(r"[*_`#>|~]+|^\s*[-+]\s+|\[([^\]]*)\]\([^)]*\)", re.MULTILINE)
FIRST_CLAUSE_MIN_WORDS = 3
FIRST_PIECE_MAX_WORDS = 6


class SentenceSplitter:
    def __init__(self, *, first_clause: bool = True) -> None:
        self._pending = ""
        self._first = first_clause  # the next piece may be a clause (only the reply's first)

    def push(self, text: str) -> list[str]:
        self._pending += text
        pieces = []
        if self._first and (clause := self._first_clause()):
            pieces.append(clause)
        start = 0
        for match in _BOUNDARY.finditer(self._pending):
            candidate = self._pending[start : match.end()].strip()
            last_word = candidate.rsplit(maxsplit=1)[-1].lower() if candidate else ""
            if len(candidate) < MIN_SENTENCE_CHARS or last_word in _ABBREVIATIONS:
                continue
            pieces.append(candidate)
            start = match.end()
        self._pending = self._pending[start:]
        if pieces:
            self._first = False
        return pieces

    def _first_clause(self) -> str | None:
        """A clause (or the first words) of the pending text that ends before any sentence does."""
        sentence_end = next((m.start() for m in _BOUNDARY.finditer(self._pending)), len(self._pending))
        for match in _CLAUSE.finditer(self._pending, 0, sentence_end):
            candidate = self._pending[: match.start()].strip()
            if len(candidate.split()) >= FIRST_CLAUSE_MIN_WORDS:
                return self._take(match.end(), candidate)
        words = list(re.finditer(r"\S+\s+", self._pending[:sentence_end]))
        if len(words) >= FIRST_PIECE_MAX_WORDS:
            end = words[FIRST_PIECE_MAX_WORDS - 1].end()
            return self._take(end, self._pending[:end].strip())
        return None

    def _take(self, end: int, piece: str) -> str:
        self._pending = self._pending[end:]
        return piece

    def flush(self) -> list[str]:
        rest, self._pending = self._pending.strip(), ""
        self._first = False
        return [rest] if rest else []


def spoken_form(text: str) -> str:
    """The words of a piece without its Markdown: Piper reads "**Docker**" as "asterisk asterisk
    Docker asterisk asterisk", which tripled the length of a list-shaped reply."""
    return " ".join(_MARKUP.sub(lambda m: m.group(1) or " ", text).split())
