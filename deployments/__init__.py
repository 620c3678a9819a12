"""Model services: one Ray Serve deployment per model, knowing models and nothing about sessions."""
