"""OpenRealtime's session side: the ingress, sessions, protocols, persistence and web client."""
