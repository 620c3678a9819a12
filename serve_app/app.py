"""The one app builder: config args -> the Ray Serve deployment graph.

``serve run configs/local.yaml`` calls ``build_app`` with the YAML's ``args``; resource options
come from the YAML's ``deployments`` section (whole ``ray_actor_options`` dicts).
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from ray.serve import Application

from deployments.llm import LanguageModel, LlmOptions
from deployments.stt import SpeechToText, SttOptions
from deployments.tts import TextToSpeech, TtsOptions
from deployments.turn_end import TurnEndDetector, TurnEndOptions
from deployments.vad import VadOptions, VoiceActivityDetector
from deployments.vision import ImageDescriber, VisionOptions
from serve_app.ingress import Ingress
from serve_app.settings import ServerOptions


class AppArgs(BaseModel):
    """Everything configurable about the graph; every field defaults to the embedded CPU setup."""

    server: ServerOptions = Field(default_factory=ServerOptions)
    vad: VadOptions = Field(default_factory=VadOptions)
    stt: SttOptions = Field(default_factory=SttOptions)
    llm: LlmOptions = Field(default_factory=LlmOptions)
    tts: TtsOptions = Field(default_factory=TtsOptions)
    vision: VisionOptions = Field(default_factory=VisionOptions)
    turn_end: TurnEndOptions = Field(default_factory=TurnEndOptions)


def build_app(args: dict | None = None) -> Application:
    config = AppArgs.model_validate(args or {})
    turn_end = config.turn_end
    if turn_end.model_path is None:  # the session option named the file before the model had a deployment
        turn_end = turn_end.model_copy(update={"model_path": config.server.session.turn_detection.smart_turn_model_path})
    return Ingress.bind(
        config.server.model_dump(),
        vad=VoiceActivityDetector.bind(config.vad.model_dump()),
        stt=SpeechToText.bind(config.stt.model_dump()),
        llm=LanguageModel.bind(config.llm.model_dump()),
        tts=TextToSpeech.bind(config.tts.model_dump()),
        vision=ImageDescriber.bind(config.vision.model_dump()),
        turn_end=TurnEndDetector.bind(turn_end.model_dump()),
    )
