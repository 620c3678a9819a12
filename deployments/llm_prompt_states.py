"""Saved llama.cpp states, so each conversation on a shared replica keeps its prompt cache.

One llama.cpp context holds one token sequence in its KV cache. A conversation whose prompt
starts with what the context holds pays only for its new tokens (llama-cpp-python matches the
prefix itself); but when two sessions alternate on one replica, each turn would re-read the
other's whole prompt. So after each reply the context's state (the KV cells in use, without the
logits table that ``Llama.save_state`` also copies) is kept here under its tokens, and before a
prompt the state sharing the longest prefix with it is restored when it beats what the context
holds. Measured in bench/prompt_cache.py.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict

import llama_cpp

# Restoring costs a copy of the state; below this many extra reusable tokens it is not worth it.
MIN_GAIN_TOKENS = 32


def common_prefix(a: list[int] | tuple[int, ...], b: list[int]) -> int:
    return llama_cpp.Llama.longest_token_prefix(a, b)


class PromptStates:
    """Least-recently-used KV states of one ``Llama``, keyed by the tokens they hold."""

    def __init__(self, llm: llama_cpp.Llama, capacity_bytes: int) -> None:
        self.llm, self.capacity_bytes = llm, capacity_bytes
        self._states: OrderedDict[tuple[int, ...], bytes] = OrderedDict()

    @property
    def size_bytes(self) -> int:
        return sum(len(state) for state in self._states.values())

    def reusable(self, prompt: list[int]) -> int:
        """Prompt tokens the context already holds (llama-cpp-python skips evaluating them)."""
        return common_prefix(self.llm._input_ids.tolist(), prompt)

    def prepare(self, prompt: list[int]) -> int:
        """Restore the best saved state for ``prompt`` if it beats the live one; returns tokens reused."""
        live = self.reusable(prompt)
        best_key, best = None, live
        for key in self._states:
            shared = common_prefix(key, prompt)
            if shared > best:
                best_key, best = key, shared
        if best_key is None or best - live < MIN_GAIN_TOKENS:
            return live
        self._restore(best_key)
        return self.reusable(prompt)

    def save(self) -> None:
        """Keep the context's current state (call after a reply, on the thread that owns the Llama)."""
        if self.capacity_bytes <= 0 or self.llm.n_tokens == 0:
            return
        ctx = self.llm._ctx.ctx
        size = llama_cpp.llama_state_get_size(ctx)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_get_data(ctx, buffer, size)
        key = tuple(self.llm._input_ids.tolist())
        # a state whose tokens this one extends is superseded by it
        for older in [k for k in self._states if len(k) <= len(key) and key[: len(k)] == k]:
            del self._states[older]
        self._states[key] = bytes(memoryview(buffer)[:written])
        while self._states and self.size_bytes > self.capacity_bytes:
            self._states.popitem(last=False)

    def _restore(self, key: tuple[int, ...]) -> None:
        state = self._states[key]
        self._states.move_to_end(key)
        buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if llama_cpp.llama_state_set_data(self.llm._ctx.ctx, buffer, len(state)) != len(state):
            raise RuntimeError("llama.cpp refused a saved state")
        self.llm.input_ids[: len(key)] = key
        self.llm.n_tokens = len(key)
        self.llm._requires_eval = True  # the logits are not the live decode's: evaluate before sampling
