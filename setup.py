"""Only the optional C extension lives here; all metadata is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "stormwatch.detect._fast",
            ["src/stormwatch/detect/_fast.c"],
            extra_compile_args=["-O3", "-ffp-contract=off"],
            optional=True,  # without a compiler, scoring falls back to the numpy path (same scores)
        )
    ]
)
