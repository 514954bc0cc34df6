"""TAXII 2.1: request vocabulary (:mod:`.query`), object checks (:mod:`.validate`), server semantics over
``store.taxii`` (:mod:`.server`), the ASGI routes (:mod:`.app`); the API mounts it in :mod:`stormwatch.api.taxii`."""
