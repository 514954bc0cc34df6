"""``stormwatch watch``: the long-running monitor (score -> analyze -> enforce -> intel sync)."""
