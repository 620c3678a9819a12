"""Text normalisation for word error rate: case, punctuation and digits spelled out."""

from __future__ import annotations

import re

from num2words import num2words


def normalise(text: str) -> str:
    text = text.lower().replace("--", " ").replace("-", " ")
    text = re.sub(r"\d+", lambda m: " " + num2words(int(m.group())) + " ", text)
    text = text.replace("-", " ")
    text = re.sub(r"[^\w\s']", " ", text)
    text = text.replace("'", "")
    return " ".join(text.split())
