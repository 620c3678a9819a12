"""The first step of a tool turn on a small local model: answer in words, or call which tool.

Left to choose freely between text and a ``<tool_call>`` block, SmolLM2-135M almost never starts a
call, and asked outright which tool a message needs it answers close to at random. What a small
model does well is judge how likely a text is: so each choice gets a one-line description (a
declared tool's own name and description, or "no tool"), and the choice under which the user's
message is most likely wins (the "channel" direction of Min et al. 2022, *Noisy Channel Language
Model Prompting*, which suits small models). Nothing here knows any tool: the descriptions come from
the declared schemas alone. A tool must beat "no tool" by a margin (``LlmOptions.tool_margin``).

The scoring runs on its own small llama.cpp context over the same weights, one KV sequence per
choice, so the choices' descriptions are evaluated once per tool set and the conversation's own KV
cache (the reply's prompt prefix) is never disturbed.
"""

from __future__ import annotations

from dataclasses import dataclass

import llama_cpp
import numpy as np
from llama_cpp._internals import LlamaBatch, LlamaContext

ANSWER = "answer"
ANSWER_CONTEXT = "No tool: a greeting, small talk, thanks, or a question answered from general knowledge."
MAX_CHOICES = 32  # KV sequences of the scoring context; more tools than this fall back to one pass
_N_CTX = 2048
_N_BATCH = 512


def choice_context(tool: dict | None) -> str:
    """The line a choice's score is conditioned on: the tool's own name and description, or no tool."""
    if tool is None:
        return ANSWER_CONTEXT
    function = tool["function"]
    return f"The user needs the tool {function['name']}: {function.get('description') or function['name']}"


@dataclass(frozen=True)
class Decision:
    """The chosen tool's name (None: answer in words) and each choice's log-likelihood of the message."""

    tool: str | None
    scores: dict[str, float]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


class ChannelChooser:
    """log P(message | choice's description) for each choice, on a scoring context of its own."""

    def __init__(self, llm: llama_cpp.Llama) -> None:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = _N_CTX, _N_BATCH, _N_BATCH
        params.n_seq_max, params.kv_unified = MAX_CHOICES, True
        params.n_threads = llm.context_params.n_threads
        params.n_threads_batch = llm.context_params.n_threads_batch
        self.n_vocab = llm.n_vocab()
        self.ctx = LlamaContext(model=llm._model, params=params, verbose=False)
        self.batch = LlamaBatch(n_tokens=_N_BATCH, embd=0, n_seq_max=1, verbose=False)
        self.held: list[tuple[int, ...]] = []  # the description tokens in each KV sequence
        self.first: list[np.ndarray] = []  # log-probabilities of the token after each description

    def _decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        """One batch of (token, position, sequence, wants logits)."""
        batch = self.batch.batch
        batch.n_tokens = len(items)
        for index, (token, position, sequence, logits) in enumerate(items):
            batch.token[index], batch.pos[index] = token, position
            batch.seq_id[index][0], batch.n_seq_id[index], batch.logits[index] = sequence, 1, logits
        self.ctx.decode(self.batch)

    def _row(self, index: int) -> np.ndarray:
        logits = np.ctypeslib.as_array(self.ctx.get_logits_ith(index), shape=(self.n_vocab,))
        return _log_softmax(logits)

    def _hold(self, contexts: list[list[int]]) -> None:
        """Put each description in its own sequence, unless exactly these are held already."""
        if [tuple(c) for c in contexts] == self.held:
            return
        llama_cpp.llama_memory_clear(self.ctx.memory, True)
        self.held, self.first = [], []
        for sequence, tokens in enumerate(contexts):
            for start in range(0, len(tokens), _N_BATCH):
                chunk = tokens[start : start + _N_BATCH]
                self._decode([(t, start + i, sequence, start + i == len(tokens) - 1) for i, t in enumerate(chunk)])
            self.first.append(self._row(len(tokens) - 1 - (len(tokens) - 1) // _N_BATCH * _N_BATCH))
            self.held.append(tuple(tokens))

    def score(self, contexts: list[list[int]], message: list[int]) -> list[float]:
        """log P(message | context) for each context; the message is removed from the cache again."""
        self._hold(contexts)
        scores = [float(first[message[0]]) for first in self.first]
        per_batch = max(1, _N_BATCH // max(1, len(message) - 1))
        for group in range(0, len(contexts), per_batch):
            sequences = range(group, min(len(contexts), group + per_batch))
            items = [(token, len(self.held[s]) + i, s, True) for s in sequences for i, token in enumerate(message[:-1])]
            if not items:
                break
            self._decode(items)
            for offset, sequence in enumerate(sequences):
                base = offset * (len(message) - 1)
                scores[sequence] += sum(float(self._row(base + i)[token]) for i, token in enumerate(message[1:]))
                llama_cpp.llama_memory_seq_rm(self.ctx.memory, sequence, len(self.held[sequence]), -1)
        return scores


def decide(names: list[str], scores: list[float], margin: float) -> Decision:
    """The best-scoring tool, if it beats "no tool" by ``margin`` (nats here; cosine similarity in
    ``tool_router``, which applies the same rule).

    The margin favours answering in words: a call nobody asked for costs the user more than a
    missed one, which they can ask for again.
    """
    by_name = dict(zip(names, scores))
    best = max((name for name in names if name != ANSWER), key=by_name.__getitem__)
    if ANSWER in by_name and by_name[best] - by_name[ANSWER] < margin:
        return Decision(None, by_name)
    return Decision(best, by_name)
