"""Typed repositories, one per concern: the only code with SQL text besides the backends.

Each is constructed with a backend (typed as :class:`~stormwatch.store.database.Database`) and reached as an
attribute of the store (``store.analysis``, ``store.disrupt``, ...). Statements use ``?`` placeholders on every backend;
dialect differences are decided here (``self._db.dialect``), never by callers.
"""
