"""Vision through an Ollama server running a vision model (llava, llama3.2-vision, moondream, ...)."""

from __future__ import annotations

import httpx
import ollama

from deployments.errors import ModelInputError
from deployments.vision_image import DEFAULT_PROMPT, DecodedImage, ImageFacts, Observation


class OllamaBackend:
    """One non-streamed ``/api/chat`` call per image; the image travels base64-encoded in the message."""

    def __init__(self, host: str, model: str, timeout_s: float) -> None:
        self.host = host
        self.model = model
        self.timeout_s = timeout_s

    async def see(self, image: DecodedImage, facts: ImageFacts, prompt: str | None) -> Observation:
        message = {
            "role": "user",
            "content": prompt or DEFAULT_PROMPT,
            "images": [image.encoded_for_models()],
        }
        try:
            # A client per call: an httpx pool belongs to the event loop that first used it.
            async with ollama.AsyncClient(host=self.host, timeout=self.timeout_s) as client:
                response = await client.chat(model=self.model, messages=[message], stream=False)
        except ollama.ResponseError as error:
            if error.status_code == 404:
                raise ModelInputError(
                    f"Ollama at {self.host} has no model {self.model!r}; run `ollama pull {self.model}`",
                    "unknown_model",
                ) from None
            raise
        except ConnectionError:
            raise ConnectionError(f"cannot reach Ollama at {self.host}; is `ollama serve` running?") from None
        except httpx.TimeoutException:
            raise TimeoutError(f"Ollama at {self.host} did not answer within {self.timeout_s:g} s") from None
        return Observation((response.message.content or "").strip())
