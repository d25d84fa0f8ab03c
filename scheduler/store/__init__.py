"""The scheduler's object store: one interface (base.Store), SQLite by default."""
