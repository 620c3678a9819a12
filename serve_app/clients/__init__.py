"""Model clients: the engine's view of the model services (Ray Serve handles or in-process models)."""
