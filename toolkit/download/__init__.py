"""Downloading model files: sources, cache, fetch engine, progress reporters."""
