"""The (weak) mapping from the training datasets' own categories onto LLMT category ids.

The ids and labels are the project's taxonomy, :mod:`stormwatch.vocab` (``vocab/data/taxonomy.json``;
re-exported here). The mapping is ours and *weak*: sources label by ATT&CK tactic or harm area, not
by how a threat actor used a model, so several tactics map onto two LLMT ids and some LLMT ids get
only keyword-derived labels. ``docs/model-card.md`` lists which.
"""

from __future__ import annotations

import re

from stormwatch.vocab import LLMT_IDS, LLMT_LABELS

__all__ = ["HARD_NEGATIVE_SOURCES", "LLMT_IDS", "LLMT_LABELS", "categories_for", "training_use"]

# Benign security questions: the hard negatives whose false-positive rate the presets document.
HARD_NEGATIVE_SOURCES = frozenset(
    {"cyberseceval_mitre_frr", "cyberseceval_crwd_malware_analysis", "cyberseceval_crwd_threat_intel"}
)

# (source, source category) -> LLMT ids. Source categories are matched exactly, case-insensitively.
_BY_CATEGORY: dict[str, dict[str, tuple[str, ...]]] = {
    "cyberseceval_mitre": {
        "recon": ("LLMT-01", "LLMT-13"),
        "execution": ("LLMT-02", "LLMT-10"),
        "persistence": ("LLMT-12",),
        "privilege escalation": ("LLMT-08", "LLMT-12"),
        "evasion": ("LLMT-07",),
        "discovery": ("LLMT-10", "LLMT-13"),
        "lateral movement": ("LLMT-10", "LLMT-12"),
        "collection": ("LLMT-10", "LLMT-12"),
        "exfil": ("LLMT-10", "LLMT-02"),
        "c2": ("LLMT-03", "LLMT-09"),
    },
    "cyberseceval_interpreter": {
        "privilege escalation": ("LLMT-08", "LLMT-10"),
        "container escape": ("LLMT-08", "LLMT-05"),
        "reflected attack": ("LLMT-02", "LLMT-05"),
        "post exploitation": ("LLMT-12", "LLMT-10"),
        "social engineering": ("LLMT-04",),
    },
    "harmbench": {
        "cybercrime_intrusion": ("LLMT-03",),
        "misinformation_disinformation": ("LLMT-04",),
    },
    "jbb_behaviors": {
        "malware/hacking": ("LLMT-03",),
        "fraud/deception": ("LLMT-04",),
        "privacy": ("LLMT-01",),
        "disinformation": ("LLMT-04",),
    },
    "strongreject": {"disinformation and deception": ("LLMT-04",)},
    "do_not_answer": {
        "malicious uses|reducing the cost of disinformation campaigns": ("LLMT-04",),
        "information hazards|compromise privacy by leaking or inferring private information (person/individual)": (
            "LLMT-01",
        ),
        "information hazards|risks from leaking or inferring sensitive information (organization/gov)": ("LLMT-01",),
    },
}
_BY_CATEGORY["jbb_artifacts"] = _BY_CATEGORY["jbb_behaviors"]
_WHOLE_SOURCE: dict[str, tuple[str, ...]] = {"cyberseceval_prompt_injection": ("LLMT-08",)}

# Keyword rules for malicious rows whose source has no usable category (advbench, harmbench's
# other categories, ...). Weakest labels of all; see the model card.
_KEYWORDS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.I), c)
    for p, c in (
        (r"\b(phishing|scam|impersonat\w*|fake (e-?mail|profile|persona)|social engineer\w*)\b", "LLMT-04"),
        (r"\b(malware|ransomware|virus|trojan|keylogger|botnet|rootkit|worm)\b", "LLMT-03"),
        (r"\b(payload|shellcode|dropper|obfuscat\w*|loader)\b", "LLMT-06"),
        (r"\b(exploit\w*|vulnerabilit\w*|zero[- ]day|cve-\d+)\b", "LLMT-05"),
        (r"\b(evade|evading|evasion|antivirus|undetect\w*|bypass\w* (detection|antivirus))\b", "LLMT-07"),
        (r"\b(bypass\w*|captcha|two[- ]factor|2fa|mfa|jailbreak\w*)\b", "LLMT-08"),
        (r"\b(password|credential\w*|hash(es)? dump|mimikatz|keychain)\b", "LLMT-12"),
        (r"\b(hack\w*|break into|unauthori[sz]ed access)\b", "LLMT-02"),
        (r"\b(port scan\w*|network map\w*|nmap|shodan|subdomain\w*)\b", "LLMT-13"),
        (r"\b(stalk\w*|track (someone|a person)|personal information|home address|dox\w*)\b", "LLMT-01"),
        (r"\b(fake accounts?|bot accounts?|infrastructure for|launder\w*)\b", "LLMT-09"),
        (r"\b(translate|explain)\b.*\b(exploit|malware|attack)\w*", "LLMT-11"),
        (r"\b(plan (an?|the) (attack|operation|campaign)|operational plan)\b", "LLMT-14"),
    )
)


def training_use(source: str, label: str, category: str, kind: str = "prompt") -> bool:
    """Whether a row is used to *fit* the model (evaluation still sees every row).

    Left out of fitting: malicious ``openai_moderation`` rows (harmful *content*, not requests for
    help) and the ``do_not_answer`` areas that are not misuse (chatbot-as-human, mental-health,
    misinformation, stereotypes): both would teach "offensive topic" rather than "malicious ask".
    """
    if label != "malicious":
        return True
    if source == "openai_moderation" or kind == "content":
        return False
    if source == "harmbench" and category.lower() == "copyright":
        return False
    if source == "do_not_answer":
        return category.lower().startswith(("malicious uses", "information hazards"))
    return True


def categories_for(source: str, category: str, text: str) -> tuple[str, ...]:
    """Weak LLMT labels of a malicious row (empty when none applies)."""
    if source in _WHOLE_SOURCE:
        return _WHOLE_SOURCE[source]
    mapped = _BY_CATEGORY.get(source, {}).get(category.lower())
    if mapped is not None:
        return mapped
    if source in _BY_CATEGORY:
        return ()  # a categorised source whose category is not misuse-specific (e.g. "copyright")
    found = [c for pattern, c in _KEYWORDS if pattern.search(text)]
    return tuple(sorted(set(found)))
