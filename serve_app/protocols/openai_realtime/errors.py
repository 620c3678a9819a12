"""Error events: the codes clients match on, and how engine errors map onto them.

Errors never close the socket. Pipecat treats every error as fatal except the two "race" codes
(``conversation_already_has_active_response``, ``response_cancel_not_active``), so those are
used exactly where OpenAI uses them.
"""

from __future__ import annotations

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"

ACTIVE_RESPONSE = "conversation_already_has_active_response"
CANCEL_NOT_ACTIVE = "response_cancel_not_active"
COMMIT_EMPTY = "input_audio_buffer_commit_empty"
UNKNOWN_PARAMETER = "unknown_parameter"
INVALID_VALUE = "invalid_value"
INVALID_JSON = "invalid_json"
UNKNOWN_EVENT = "invalid_event_type"
UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"
ITEM_NOT_FOUND = "item_not_found"
DUPLICATE_ITEM = "duplicate_item_id"
INVALID_API_KEY = "invalid_api_key"
UNSUPPORTED = "unsupported"
# limits (serve_app/session/options.py LimitsOptions; the README's "Limits" table)
RATE_LIMITED = "rate_limit_exceeded"
APPEND_TOO_LARGE = "audio_append_too_large"
BUFFER_FULL = "input_audio_buffer_full"
# the engine's limit codes: the client sent too much, whatever the phase
LIMIT_CODES = frozenset({"audio_too_fast", "audio_backlog", "image_too_large", "image_too_many_pixels",
                         "too_many_images", "text_too_long", "instructions_too_long", "too_many_tools",
                         "tools_too_large", RATE_LIMITED})

# engine error codes that have an OpenAI name
_ENGINE_CODES = {
    "response_in_progress": ACTIVE_RESPONSE,
    "unknown_message": ITEM_NOT_FOUND,
    "invalid_config": INVALID_VALUE,
    "empty_audio": COMMIT_EMPTY,
}
_MODEL_PHASES = {"vad", "stt", "llm", "tts", "vision"}


class ProtocolError(Exception):
    """A client event the server refuses; becomes one ``error`` event carrying the event's id."""

    def __init__(self, message: str, code: str, *, param: str | None = None, kind: str = INVALID_REQUEST) -> None:
        super().__init__(message)
        self.message, self.code, self.param, self.kind = message, code, param, kind


def engine_error(message: str, phase: str, code: str) -> ProtocolError:
    kind = SERVER_ERROR if phase in _MODEL_PHASES and code not in LIMIT_CODES else INVALID_REQUEST
    return ProtocolError(message, _ENGINE_CODES.get(code, code), kind=kind)
