"""Keep a free-running reply inside the tool grammar's text rule without running the grammar.

llama-cpp-python puts a grammar first in its sampler chain, so the grammar checks all ~49k
vocabulary entries at every token: on the embedded SmolLM2 a reply under the tool grammar decodes
at about 26 tokens/s on one thread, and at about 43 under this mask (bench/decode_rate.py). Yet an ``auto`` reply is either a
call (which opens with ``<``) or text of at least one character that holds no ``<`` and does not
open with whitespace (an empty reply is not text: the grammar never allowed one); that
much a logit mask can enforce for a few microseconds a token. So a reply is decoded free, under
this mask, and only a reply whose first token opens a ``<`` is decoded again under the grammar
(the model chose a call: the grammar then makes it well-formed, as before).
"""

from __future__ import annotations

import llama_cpp
import numpy as np


class TokenClasses:
    """Which of a vocabulary's tokens hold a ``<``, open with one, or open with whitespace."""

    def __init__(self, llm: llama_cpp.Llama) -> None:
        vocab = llm._model.vocab
        holds_angle, opens_angle, opens_space, ending = [], [], [], []
        for token in range(llm.n_vocab()):
            if llama_cpp.llama_vocab_is_control(vocab, token) or llama_cpp.llama_vocab_is_eog(vocab, token):
                ending.append(token)  # end of turn and other control tokens end the reply: allowed after
                continue  # its first token (the text rule wants at least one character)
            text = llm.detokenize([token]).decode("utf-8", "replace")
            if "<" in text:
                holds_angle.append(token)
                if text.startswith("<"):
                    opens_angle.append(token)
            if text[:1].isspace():
                opens_space.append(token)
        self.holds_angle = np.array(holds_angle, dtype=np.intc)
        self.opens_angle = frozenset(opens_angle)
        # the first token of a text reply: not the end, no whitespace, and a "<" only where it opens a call
        not_first = set(ending) | set(opens_space) | (set(holds_angle) - self.opens_angle)
        self.not_first = np.array(sorted(not_first), dtype=np.intc)

    def opens_call(self, token: int) -> bool:
        return token in self.opens_angle


class TextGuard:
    """A logits processor for one reply: the text rule's mask, from the reply's first token on.

    ``calls_allowed``: whether the first token may open a ``<`` (an ``auto`` reply with tools);
    a text-only reply bans ``<`` from the start.
    """

    def __init__(self, classes: TokenClasses, prompt_length: int, calls_allowed: bool) -> None:
        self._classes, self._prompt_length, self._calls_allowed = classes, prompt_length, calls_allowed

    def __call__(self, input_ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
        if len(input_ids) <= self._prompt_length:  # the reply's first token
            logits[self._classes.not_first] = -np.inf
            if not self._calls_allowed:
                logits[self._classes.holds_angle] = -np.inf
        else:
            logits[self._classes.holds_angle] = -np.inf
        return logits
