"""WebRTC calls per OpenAI's GA flow (``POST /v1/realtime/calls``) over the OpenAI Realtime adapter.

Modules: ``calls`` (the HTTP endpoints and this replica's calls), ``call`` (one peer connection),
``data_channel`` (``oai-events`` as the adapter's transport), ``media`` (Opus frames <-> PCM16, the
paced reply track), ``playback`` (the server-side output buffer and its events), ``events``,
``client_secrets`` (ephemeral keys) and ``options``. Importing this package does not load aiortc.
"""
