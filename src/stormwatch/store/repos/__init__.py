"""Typed repositories, one per concern: the only code with SQL text besides the backends.

Each is constructed with the concrete :class:`~stormwatch.store.sql.SqlStore` and reached as an attribute of
the store (``store.analysis``, ``store.disrupt``, ...). Statements use ``?`` placeholders on every backend;
dialect differences are decided here (``self._db.dialect``), never by callers.
"""
