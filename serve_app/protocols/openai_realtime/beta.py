"""The beta wire shape (``OpenAI-Beta: realtime=v1``), derived from and translated to the GA shape.

The server speaks GA internally; a beta connection gets: the renamed delta/done events,
``conversation.item.created`` instead of ``.added`` (and no ``.done``), ``text``/``audio`` content
types, and a flat session object. Beta clients' flat ``session.update`` and ``response.create``
are turned into the GA form before they are handled.
"""

from __future__ import annotations

from typing import Any

from serve_app.protocols.openai_realtime.audio import PCM, PCMA, PCMU

_RENAMED = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "conversation.item.added": "conversation.item.created",
}
_PART_TYPES = {"output_text": "text", "output_audio": "audio"}
_FORMAT_NAMES = {PCM: "pcm16", PCMU: "g711_ulaw", PCMA: "g711_alaw"}
_FORMATS = {name: {"type": fmt} for fmt, name in _FORMAT_NAMES.items()}


# ---- outgoing: GA -> beta ------------------------------------------------------------------


def event_to_beta(event: dict[str, Any]) -> dict[str, Any] | None:
    """The beta form of a GA server event, or None where beta has no such event."""
    kind = event["type"]
    if kind == "conversation.item.done":
        return None
    out = {**event, "type": _RENAMED.get(kind, kind)}
    if kind == "response.function_call_arguments.done":
        out.pop("name", None)
    if "item" in out:
        out["item"] = item_to_beta(out["item"])
    if "response" in out:
        out["response"] = response_to_beta(out["response"])
    if "session" in out:
        out["session"] = session_to_beta(out["session"])
    return out


def item_to_beta(item: dict[str, Any]) -> dict[str, Any]:
    if "content" not in item:
        return item
    parts = [{**p, "type": _PART_TYPES.get(p["type"], p["type"])} for p in item["content"]
             if p["type"] != "input_image"]  # beta has no image input
    return {**item, "content": parts}


def response_to_beta(response: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in response.items() if k not in ("audio", "output_modalities")}
    output = response.get("audio", {}).get("output", {})
    out["modalities"] = ["text", "audio"] if response.get("output_modalities") == ["audio"] else ["text"]
    out["voice"] = output.get("voice")
    out["output_audio_format"] = _FORMAT_NAMES[output.get("format", {}).get("type", PCM)]
    out["output"] = [item_to_beta(i) for i in response.get("output", [])]
    return out


def session_to_beta(session: dict[str, Any]) -> dict[str, Any]:
    audio_in, audio_out = session["audio"]["input"], session["audio"]["output"]
    choice = session["tool_choice"]
    return {
        "object": "realtime.session",
        "id": session["id"],
        "modalities": ["text", "audio"] if session["output_modalities"] == ["audio"] else ["text"],
        "instructions": session["instructions"],
        "voice": audio_out["voice"],
        "speed": audio_out["speed"],
        "input_audio_format": _FORMAT_NAMES[audio_in["format"]["type"]],
        "output_audio_format": _FORMAT_NAMES[audio_out["format"]["type"]],
        "input_audio_transcription": audio_in["transcription"],
        "input_audio_noise_reduction": audio_in["noise_reduction"],
        "turn_detection": audio_in["turn_detection"],
        "tools": session["tools"],
        "tool_choice": choice if isinstance(choice, str) else "required",  # beta's tool_choice is a string
        "temperature": 0.8,
        "max_response_output_tokens": session["max_output_tokens"],
        "tracing": session["tracing"],
        "expires_at": session["expires_at"],
    }


# ---- incoming: beta -> GA ------------------------------------------------------------------


def session_update_to_ga(flat: dict[str, Any]) -> dict[str, Any]:
    """A beta (flat) partial session -> the GA partial session; only the fields given."""
    ga: dict[str, Any] = {k: flat[k] for k in ("instructions", "tools", "tool_choice", "tracing") if k in flat}
    audio_in: dict[str, Any] = {}
    audio_out: dict[str, Any] = {}
    if "modalities" in flat:
        ga["output_modalities"] = _output_modalities(flat["modalities"])
    if "max_response_output_tokens" in flat:
        ga["max_output_tokens"] = flat["max_response_output_tokens"]
    if "input_audio_format" in flat:
        audio_in["format"] = _FORMATS.get(flat["input_audio_format"], {"type": flat["input_audio_format"]})
    if "input_audio_transcription" in flat:
        audio_in["transcription"] = flat["input_audio_transcription"]
    if "input_audio_noise_reduction" in flat:
        audio_in["noise_reduction"] = flat["input_audio_noise_reduction"]
    if "turn_detection" in flat:
        audio_in["turn_detection"] = flat["turn_detection"]
    if "output_audio_format" in flat:
        audio_out["format"] = _FORMATS.get(flat["output_audio_format"], {"type": flat["output_audio_format"]})
    for key in ("voice", "speed"):
        if key in flat:
            audio_out[key] = flat[key]
    if audio_in or audio_out:
        ga["audio"] = {k: v for k, v in (("input", audio_in), ("output", audio_out)) if v}
    return ga


def response_params_to_ga(flat: dict[str, Any]) -> dict[str, Any]:
    ga = {k: v for k, v in flat.items()
          if k not in ("modalities", "voice", "output_audio_format", "max_response_output_tokens", "temperature")}
    if "modalities" in flat:
        ga["output_modalities"] = _output_modalities(flat["modalities"])
    if "max_response_output_tokens" in flat:
        ga["max_output_tokens"] = flat["max_response_output_tokens"]
    output: dict[str, Any] = {}
    if "voice" in flat:
        output["voice"] = flat["voice"]
    if "output_audio_format" in flat:
        output["format"] = _FORMATS.get(flat["output_audio_format"], {"type": flat["output_audio_format"]})
    if output:
        ga["audio"] = {"output": output}
    return ga


def _output_modalities(modalities: Any) -> Any:
    """Beta's ``["text", "audio"]`` is GA's ``["audio"]``; anything but a list of those two is passed on
    as it came, so GA's validation refuses it (as ``output_modalities``) instead of it being guessed at."""
    if isinstance(modalities, list) and modalities and all(m in ("text", "audio") for m in modalities):
        return ["audio"] if "audio" in modalities else ["text"]
    return modalities


def item_to_ga(item: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(item.get("content"), list):
        return item
    assistant = item.get("role") == "assistant"
    renamed = {"text": "output_text" if assistant else "input_text", "audio": "output_audio"}
    parts = [{**p, "type": renamed.get(p.get("type"), p.get("type"))} if isinstance(p, dict) else p
             for p in item["content"]]
    return {**item, "content": parts}


def client_event_to_ga(event: dict[str, Any]) -> dict[str, Any]:
    kind = event.get("type")
    if kind == "session.update" and isinstance(event.get("session"), dict):
        return {**event, "session": session_update_to_ga(event["session"])}
    if kind == "response.create" and isinstance(event.get("response"), dict):
        return {**event, "response": response_params_to_ga(event["response"])}
    if kind == "conversation.item.create" and isinstance(event.get("item"), dict):
        return {**event, "item": item_to_ga(event["item"])}
    return event

