"""Threat intelligence in and out: one package for what comes from partners and what goes to them.

* :mod:`~stormwatch.intel.importer` loads STIX 2.1 bundles (identities, intrusion-sets, indicators, ...).
* :mod:`~stormwatch.intel.stix_export` builds a STIX 2.1 bundle of what stormwatch found.
* :mod:`~stormwatch.intel.sharing_policy` is the redaction / TLP policy every export goes through.
* :mod:`~stormwatch.intel.taxii` is the TAXII 2.1 server (storage + ASGI routes).
* :mod:`~stormwatch.intel.pull` takes partners' intelligence in over TAXII, checkpointed.
* :mod:`~stormwatch.intel.misp` writes MISP feeds and imports MISP events.

Matching indicators against accounts is analysis (:mod:`stormwatch.analyze.intel_matching`).
"""

from __future__ import annotations

STIX_MEDIA_TYPE = "application/stix+json;version=2.1"
TAXII_MEDIA_TYPE = "application/taxii+json;version=2.1"
