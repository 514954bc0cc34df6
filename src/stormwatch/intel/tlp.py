"""TLP 2.0 markings (the OASIS property-extension objects) and normalisation of what peers send.

STIX 2.1 predefines only the TLP 1.0 markings; TLP 2.0 is published by the OASIS CTI TC as a
property extension (``extension-definition--60a3c5c5-…``). We emit the TLP 2.0 objects in every
bundle and, on ingest, fold TLP 1.0 ids, TLP 2.0 ids and OpenCTI's AMBER+STRICT statement marking
onto one internal level (WHITE ≡ CLEAR). An unknown marking is treated as RED.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

TLP2_EXTENSION = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"
TLP2_CREATED = "2022-10-01T00:00:00.000Z"


class Tlp(IntEnum):
    """TLP 2.0 levels, ordered from least to most restrictive."""

    CLEAR = 0
    GREEN = 1
    AMBER = 2
    AMBER_STRICT = 3
    RED = 4

    @property
    def label(self) -> str:
        """``clear``, ``green``, ``amber``, ``amber+strict`` or ``red``."""
        return self.name.lower().replace("_", "+")

    @property
    def marking_id(self) -> str:
        return TLP2_IDS[self]

    @classmethod
    def parse(cls, value: str | Tlp) -> Tlp:
        """Accept ``amber``, ``TLP:AMBER``, ``amber+strict``, ``amber_strict``, ``white`` (= clear)."""
        if isinstance(value, Tlp):
            return value
        v = value.strip().lower().removeprefix("tlp:").replace("_", "+").replace("-", "+")
        if v == "white":
            v = "clear"
        for level in cls:
            if level.label == v:
                return level
        raise ValueError(f"unknown TLP level {value!r} (clear, green, amber, amber+strict, red)")


TLP2_IDS: dict[Tlp, str] = {
    Tlp.CLEAR: "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    Tlp.GREEN: "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    Tlp.AMBER: "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    Tlp.AMBER_STRICT: "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    Tlp.RED: "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}

#: every marking id we recognise -> level (TLP 2.0, TLP 1.0, OpenCTI's AMBER+STRICT)
KNOWN_MARKINGS: dict[str, Tlp] = {
    **{mid: level for level, mid in TLP2_IDS.items()},
    "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9": Tlp.CLEAR,  # TLP 1.0 WHITE
    "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da": Tlp.GREEN,  # TLP 1.0 GREEN
    "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82": Tlp.AMBER,  # TLP 1.0 AMBER
    "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed": Tlp.RED,  # TLP 1.0 RED
    "marking-definition--826578e1-40ad-459f-bc73-ede076f81f37": Tlp.AMBER_STRICT,  # OpenCTI
}


def marking_object(level: Tlp) -> dict[str, Any]:
    """The OASIS TLP 2.0 marking-definition object for ``level``."""
    return {
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": TLP2_IDS[level],
        "created": TLP2_CREATED,
        "name": "TLP:" + level.label.upper(),
        "extensions": {TLP2_EXTENSION: {"extension_type": "property-extension", "tlp_2_0": level.label}},
    }


def object_tlp(obj: dict[str, Any], *, default: Tlp = Tlp.AMBER) -> Tlp:
    """The most restrictive TLP level an object carries; ``default`` when it carries none.

    Marking references we do not recognise (a statement marking, a custom TLP) count as RED:
    the safe reading of a restriction we cannot interpret. A marking-definition object itself is
    CLEAR (it is the definition, not restricted content).
    """
    if obj.get("type") == "marking-definition":
        return Tlp.CLEAR
    refs = list(obj.get("object_marking_refs") or [])
    for gm in obj.get("granular_markings") or []:
        if isinstance(gm, dict) and isinstance(gm.get("marking_ref"), str):
            refs.append(gm["marking_ref"])
    if not refs:
        return default
    level = Tlp.CLEAR
    for ref in refs:
        level = max(level, KNOWN_MARKINGS.get(ref, Tlp.RED)) if isinstance(ref, str) else Tlp.RED
    return level
