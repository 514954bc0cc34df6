"""Scoring stored events with the active model and shadow candidates, incrementally; the model registry."""
