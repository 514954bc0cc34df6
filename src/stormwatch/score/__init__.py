"""Incremental pipeline stages over the store (scoring; the account stages live in ``analyze``)."""
