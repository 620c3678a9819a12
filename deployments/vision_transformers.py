"""Vision through a Hugging Face image-text-to-text model loaded from a local directory.

Works with any model whose processor has a chat template (LLaVA, Idefics3/SmolVLM, Qwen2-VL, ...),
on transformers 4.46 and newer. Weights are never fetched: ``model_path`` must be a local folder.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from deployments.vision_image import DEFAULT_PROMPT, DecodedImage, ImageFacts, Observation


def _model_class():
    """The auto class for vision-language generation: renamed across transformers releases."""
    import transformers

    for name in ("AutoModelForImageTextToText", "AutoModelForVision2Seq"):
        if hasattr(transformers, name):
            return getattr(transformers, name)
    raise ImportError(f"transformers {transformers.__version__} has no image-text-to-text auto model")


class TransformersBackend:
    """Greedy generation in a worker thread; a cancelled request stops generating at the next token."""

    def __init__(
        self, model_path: str, device: str, dtype: str, max_new_tokens: int, cpu_threads: int | None = None
    ) -> None:
        import torch
        from transformers import AutoProcessor

        path = Path(model_path).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no Hugging Face model at {path} (expected a folder with config.json)")
        if cpu_threads and device == "cpu":
            torch.set_num_threads(cpu_threads)
        self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        if not getattr(self.processor, "chat_template", None):
            raise ValueError(f"the processor at {path} has no chat template, so prompts cannot be formatted")
        self.dtype = getattr(torch, dtype)
        self.device = device
        self.model = (
            _model_class().from_pretrained(path, local_files_only=True).to(device=device, dtype=self.dtype)
        )
        self.model.eval()
        self.max_new_tokens = max_new_tokens

    async def see(self, image: DecodedImage, facts: ImageFacts, prompt: str | None) -> Observation:
        stop = threading.Event()
        try:
            text = await asyncio.to_thread(self._generate, image, prompt or DEFAULT_PROMPT, stop)
        finally:
            stop.set()
        return Observation(text)

    def _generate(self, image: DecodedImage, prompt: str, stop: threading.Event) -> str:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class StopWhenCancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full(
                    (input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device
                )

        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = self.processor(images=[image.picture], text=[text], return_tensors="pt")
        inputs = inputs.to(self.device, dtype=self.dtype)  # casts only the floating tensors (pixel values)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                stopping_criteria=StoppingCriteriaList([StopWhenCancelled()]),
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)[0].strip()
