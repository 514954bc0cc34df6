"""Built-in route modules; each has ``install(app)`` and is listed in ``extensions.DEFAULT_PLUGINS``."""
