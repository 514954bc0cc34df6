"""Disrupt: policies -> decisions -> actions through sinks, with an audit chain, cases and appeals.

The public surface is :mod:`stormwatch.disrupt.service`; the CLI (``stormwatch policy|enforce|
actions|audit|cases|appeals|labels``) and the HTTP API both call it. See docs/disrupt.md.
"""
