"""Client-side integrations: code that runs inside other tools and calls a stormwatch server over HTTP.

Nothing here is imported by stormwatch itself, and nothing here imports the rest of stormwatch:
each module needs only its host tool (LiteLLM, ...), imported when the module is used.
"""
