"""Sharing: STIX 2.1 export, redaction/TLP policy, TAXII 2.1 server and client, MISP feeds.

* :mod:`~stormwatch.share.stix_export` builds a STIX 2.1 bundle of what stormwatch found.
* :mod:`~stormwatch.share.policy` is the redaction / TLP policy every export goes through.
* :mod:`~stormwatch.share.taxii` is the TAXII 2.1 server (storage + ASGI routes).
* :mod:`~stormwatch.share.pull` takes partners' intelligence in over TAXII, checkpointed.
* :mod:`~stormwatch.share.misp` writes MISP feeds and imports MISP events.
"""

from __future__ import annotations

STIX_MEDIA_TYPE = "application/stix+json;version=2.1"
TAXII_MEDIA_TYPE = "application/taxii+json;version=2.1"
