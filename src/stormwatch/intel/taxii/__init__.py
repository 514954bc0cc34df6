"""TAXII 2.1: storage and query logic (:mod:`.repo`) and the ASGI routes (:mod:`.app`)."""
