"""Transport adapters: wire frames <-> typed engine commands and events."""
