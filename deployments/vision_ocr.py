"""The embedded vision backend: RapidOCR text plus plain image facts, no generative model.

RapidOCR is pointed at the PP-OCRv6 detection/recognition and the orientation classifier ONNX
files shipped inside the ``rapidocr`` wheel; given explicit paths it never downloads anything.
"""

from __future__ import annotations

import asyncio
import threading

from PIL import Image, ImageDraw, ImageFont

from deployments.embedded import EmbeddedModelMissing, package_dir
from deployments.vision_image import DecodedImage, ImageFacts, Observation

BUNDLED_MODELS = {
    "Det": "PP-OCRv6_det_small.onnx",
    "Rec": "PP-OCRv6_rec_small.onnx",
    "Cls": "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
}
MAX_QUOTED_CHARS = 1500  # keeps a poster-sized page of text from flooding the LLM's context


class TextReader:
    """RapidOCR on the wheel's bundled models; one image at a time (the engine keeps per-call state)."""

    def __init__(self, detection_side: int = 960, cpu_threads: int | None = None) -> None:
        from rapidocr import RapidOCR

        models = package_dir("rapidocr") / "models"
        # RapidOCR's default scales every image UP to a 736 px short side; capping the long side instead is
        # about 4x faster on screenshots and photos and still reads 28 px text on a 1600x1200 page.
        params: dict[str, object] = {
            "Global.log_level": "warning",
            "Det.limit_type": "max",
            "Det.limit_side_len": detection_side,
        }
        for stage, filename in BUNDLED_MODELS.items():
            path = models / filename
            if not path.exists():
                raise EmbeddedModelMissing(f"rapidocr's bundled model {path} is missing")
            params[f"{stage}.model_path"] = str(path)
        if cpu_threads:
            params["EngineConfig.onnxruntime.intra_op_num_threads"] = cpu_threads
        self._engine = RapidOCR(params=params)
        self._lock = threading.Lock()
        self._warm_up()

    def _warm_up(self) -> None:
        """RapidOCR loads its sessions on first use; pay that at start-up, not on a user's first image."""
        sample = Image.new("RGB", (160, 64), "white")
        ImageDraw.Draw(sample).text((8, 12), "OK", fill="black", font=ImageFont.load_default(size=36))
        self.read(sample)

    def read(self, picture: Image.Image) -> str:
        """The text in the picture, one line per text row, top to bottom (blocking; call in a thread)."""
        with self._lock:
            result = self._engine(picture)
        if not result.txts:
            return ""
        return "\n".join(_rows(result.boxes, result.txts))


def _rows(boxes, texts) -> list[str]:
    """Rows of text, top to bottom; a box whose vertical centre is inside a row's first box joins it."""
    words = [
        (float(box[:, 1].min()), float(box[:, 1].max()), float(box[:, 0].min()), text)
        for box, text in zip(boxes, texts, strict=True)
    ]
    words.sort(key=lambda word: word[0] + word[1])
    rows: list[list[tuple[float, float, float, str]]] = []
    for word in words:
        top, bottom, _, _ = rows[-1][0] if rows else (0.0, -1.0, 0.0, "")
        if top <= (word[0] + word[1]) / 2 <= bottom:
            rows[-1].append(word)
        else:
            rows.append([word])
    return [" ".join(text for *_, text in sorted(row, key=lambda word: word[2])) for row in rows]


def describe_with_text(facts: ImageFacts, text: str) -> str:
    """A sentence or two a voice assistant can use as context, e.g. for "what does this say?"."""
    animated = "animated " if facts.frames > 1 else ""
    sentence = f"A {facts.width}×{facts.height} {animated}{facts.format} image"
    names = [colour.name for colour in facts.dominant_colours[:3]]
    if names:
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        sentence += f", mostly {listed}"
    sentence += "."
    if facts.frames > 1:
        sentence += f" Only the first of its {facts.frames} frames was looked at."
    if not text:
        return sentence + " No text was found in it."
    quoted = " / ".join(text.splitlines())
    if len(quoted) > MAX_QUOTED_CHARS:
        quoted = quoted[:MAX_QUOTED_CHARS].rstrip() + "…"
    return sentence + f" It contains the text: “{quoted}”."


class OcrBackend:
    """Answers every request with image facts and the text read from the image; the prompt is not used."""

    def __init__(self, detection_side: int = 960, cpu_threads: int | None = None) -> None:
        self.reader = TextReader(detection_side, cpu_threads)

    async def see(self, image: DecodedImage, facts: ImageFacts, prompt: str | None) -> Observation:
        text = await asyncio.to_thread(self.reader.read, image.picture)
        return Observation(describe_with_text(facts, text), ocr_text=text)
