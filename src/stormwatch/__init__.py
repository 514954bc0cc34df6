"""stormwatch: find, link, attribute and disrupt state-affiliated misuse of AI services."""

__version__ = "0.1.0"
