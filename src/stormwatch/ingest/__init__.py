"""Ingest usage logs in any supported format into the store (see :mod:`stormwatch.ingest.runner`)."""
