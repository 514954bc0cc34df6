"""Account judgement, infrastructure linking and actor attribution (``stormwatch analyze``).

Entry point: :func:`stormwatch.analyze.pipeline.analyze`. See ``docs/analyze.md``.
"""
