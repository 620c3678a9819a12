"""The session engine: one conversation per socket, its turns, tools and end-of-turn detection."""
