"""Cut a token stream into sentences, so speech can start on the first one while the LLM writes on."""

from __future__ import annotations

import re

_BOUNDARY = re.compile(r"(?<=[.!?…])[\"')\]]*\s+|\n+")
_ABBREVIATIONS = {"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "e.g.", "i.e.", "etc.", "prof.", "jr.", "sr."}
MIN_SENTENCE_CHARS = 8  # "Yes." alone is fine to speak, but "3." from a list is not worth a TTS call


class SentenceSplitter:
    def __init__(self) -> None:
        self._pending = ""

    def push(self, text: str) -> list[str]:
        self._pending += text
        sentences = []
        start = 0
        for match in _BOUNDARY.finditer(self._pending):
            candidate = self._pending[start : match.end()].strip()
            last_word = candidate.rsplit(maxsplit=1)[-1].lower() if candidate else ""
            if len(candidate) < MIN_SENTENCE_CHARS or last_word in _ABBREVIATIONS:
                continue
            sentences.append(candidate)
            start = match.end()
        self._pending = self._pending[start:]
        return sentences

    def flush(self) -> list[str]:
        rest, self._pending = self._pending.strip(), ""
        return [rest] if rest else []
