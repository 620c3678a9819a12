"""The one exception a model service raises for a request it cannot serve.

Ray re-raises a replica's exception on the caller as a subclass of the original type, so the
ingress can catch ``ModelInputError`` around any handle call and turn it into an ``error`` event.
The replica itself keeps running: bad input is validated before it reaches a model.
"""

from __future__ import annotations


class ModelInputError(ValueError):
    """A request a model service refuses (empty audio, wrong dtype, not an image, unknown model)."""

    def __init__(self, message: str, code: str = "invalid_input") -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __reduce__(self):  # keep both fields when Ray pickles the exception back to the caller
        return (type(self), (self.message, self.code))

    def __str__(self) -> str:
        return f"{self.message} ({self.code})"
