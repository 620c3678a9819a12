"""Session options: turn detection, barge-in, context, pacing and tools, with their defaults."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

PROJECT_DIR = Path(__file__).resolve().parents[2]


class TurnDetectionOptions(BaseModel):
    threshold: float = Field(0.5, ge=0, le=1, description="speech probability that counts as speech")
    min_speech_ms: int = Field(250, ge=0, description="speech shorter than this is ignored (noise, clicks)")
    min_silence_ms: int = Field(500, ge=0, description="fixed-silence end of turn when the end-of-turn model is off")
    prefix_padding_ms: int = Field(300, ge=0, description="audio kept from before speech onset")
    smart_turn: bool = Field(True, description="use the Smart Turn v3.2 end-of-turn model")
    smart_turn_model_path: str | None = Field(None, description="default: .models/smart-turn-v3.2-cpu.onnx")
    smart_turn_check_after_ms: int = Field(200, ge=0, description="pause after which the model is asked")
    speculate_after_ms: int = Field(
        96, ge=0, description="pause after which the utterance so far is transcribed and answered, held back "
        "until the turn ends there (SessionOptions.speculative_turns)")
    smart_turn_threshold: float = Field(0.5, ge=0, le=1, description="completion probability that ends the turn")
    max_silence_ms: int = Field(2000, ge=0, description="an unfinished sentence ends after this much silence anyway")
    max_utterance_s: float = Field(60.0, gt=0, description="a turn this long is ended and transcribed")


class BargeInOptions(BaseModel):
    """Talking over the assistant: playback pauses on the first frame of speech and stops for good
    once ``min_speech_ms`` of speech above ``threshold`` confirm it; anything shorter (a click, a
    cough, an echo burst) resumes playback where it paused."""

    threshold: float = Field(0.7, ge=0, le=1, description="stricter than listening: the assistant's own echo must not trip it")
    min_speech_ms: int = Field(128, ge=0, description="speech needed to confirm a barge-in; shorter resumes playback")


class LimitsOptions(BaseModel):
    """What one client may send or make the server hold. Past a limit the client gets an ``error`` with
    the code listed beside it in the README ("Limits"), and the socket stays usable; a client that stops
    reading is closed with 1008. The defaults leave a client that talks in real time (or sends a recorded
    question at once, in chunks) untouched."""

    inbox_commands: int = Field(256, ge=1, description="client commands waiting for the session actor; the "
                                "socket is read no further until there is room (backpressure, nothing refused)")
    outbox_events: int = Field(2000, ge=10, description="events waiting for a client that does not read them; "
                               "one more and the socket is closed with 1008")
    outbox_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="the same, in (approximate) bytes")
    stalled_send_s: float = Field(30.0, gt=0, description="a frame the client has not taken in this long: "
                                  "closed with 1008 (the client is not reading)")
    messages_per_s: float = Field(200.0, gt=0, description="messages per connection per second, sustained "
                                  "(a token bucket); more are refused with rate_limit_exceeded")
    message_burst: int = Field(1000, ge=1, description="the bucket's size: messages a client may send at once")
    audio_burst_s: float = Field(30.0, gt=0, description="how far input audio may run ahead of the wall clock "
                                 "(a recorded question sent at once); beyond, audio is dropped with audio_too_fast")
    vad_pending_s: float = Field(10.0, gt=0, description="audio waiting for the VAD; the oldest is dropped past it "
                                 "(audio_backlog)")
    append_bytes: int = Field(15 * 1024 * 1024, ge=1, description="one /v1/realtime input_audio_buffer.append's "
                              "audio, as base64 (OpenAI's own limit; the whole frame must stay under 16 MiB)")
    uncommitted_audio_s: float = Field(60.0, gt=0, description="audio appended and not committed, with "
                                       "turn_detection null; more is refused with input_audio_buffer_full")
    instructions_chars: int = Field(20_000, ge=1, description="a session's or a response's instructions")
    tools: int = Field(32, ge=0, description="tools a session or a response declares (each becomes a grammar)")
    tools_bytes: int = Field(64 * 1024, ge=1, description="those tools' JSON, all together")
    text_chars: int = Field(20_000, ge=1, description="one user message, item text, tool result or function output")
    items: int = Field(1000, ge=10, description="conversation items a /v1/realtime session remembers; the oldest "
                       "are forgotten (item_not_found afterwards), as the LLM context forgets old turns")
    context_messages: int = Field(400, ge=10, description="messages the session keeps in memory for the LLM "
                                  "context; older ones stay in the store only")
    image_pixels: int = Field(50_000_000, ge=1, description="width x height of one image, read from its header "
                              "before it is decoded")
    images_in_flight: int = Field(4, ge=1, description="images being described at once; more are refused "
                                  "with too_many_images")
    disconnect_drain_s: float = Field(10.0, ge=0, description="after a disconnect, how long a transcript or "
                                      "image description still in flight is waited for and stored")


class SessionOptions(BaseModel):
    db_path: str = Field("data/openrealtime.sqlite3", description="SQLite file for sessions and messages")
    instructions: str = Field(
        "You are a helpful, friendly voice assistant. Answer in one or two short sentences.",
        description="default system prompt; a client's config.instructions replaces it",
    )
    turn_detection: TurnDetectionOptions = Field(default_factory=TurnDetectionOptions)
    barge_in: BargeInOptions = Field(default_factory=BargeInOptions)
    context_turns: int = Field(16, ge=1, description="most user turns (with their answers) sent to the LLM; trimmed to half at once")
    context_max_chars: int = Field(6000, ge=200, description="character budget for the LLM history; trimmed to half at once, oldest first")
    max_response_tokens: int = Field(120, ge=1, le=4096, description="token budget of a text-only reply")
    spoken_reply_tokens: int = Field(
        48, ge=1, le=4096, description="token budget of a spoken reply (a sentence or two); a client's own "
        "max_output_tokens wins")
    speculative_turns: bool = Field(
        True, description="at the first pause, transcribe and draft the answer while the end-of-turn model decides")
    temperature: float = Field(0.6, ge=0, le=2)
    max_tool_rounds: int = Field(3, ge=1, description="LLM -> tools -> LLM loops per turn")
    client_tool_timeout_s: float = Field(30.0, gt=0)
    playback_lead_ms: int = Field(1000, ge=0, description="how far ahead of real time audio is sent; bounds what a barge-in must drop")
    partial_transcripts: bool = Field(True, description="transcript_partial while the user speaks")
    partial_interval_ms: int = Field(1000, ge=200)
    vad_tick_ms: int = Field(30, ge=5, description="the ingress batches all sessions' audio into one VAD call per tick")
    model_timeout_s: float = Field(30.0, gt=0, description="a model call slower than this is an error event")
    weather_url: str | None = Field(None, description="URL template with {city} for the get_weather tool")
    max_image_bytes: int = Field(10 * 1024 * 1024, gt=0)
    max_audio_frame_bytes: int = Field(1024 * 1024, gt=0)
    limits: LimitsOptions = Field(default_factory=LimitsOptions)

    def database_path(self) -> Path:
        """Relative paths are under the project directory: Ray workers do not run in the caller's cwd."""
        path = Path(self.db_path)
        return path if path.is_absolute() else PROJECT_DIR / path

    def smart_turn_path(self) -> Path:
        if self.turn_detection.smart_turn_model_path:
            return Path(self.turn_detection.smart_turn_model_path)
        return PROJECT_DIR / ".models" / "smart-turn-v3.2-cpu.onnx"
