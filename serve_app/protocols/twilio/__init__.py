"""Twilio Media Streams: phone calls as voice sessions on the engine.

``webhook`` (``POST /twilio/voice``: the TwiML, and Twilio's request signatures), ``wire`` (the
socket's messages), ``mulaw`` (G.711), ``playback`` (what the caller has heard, from the marks
Twilio echoes), ``keypad`` (DTMF keys into a message), ``options`` and ``adapter`` (one call).
See README.md beside them. Nothing is imported here, so ``serve_app.settings`` can import the
options without the engine.
"""
