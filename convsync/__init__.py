"""convsync: mirror Agent API conversations as local folders."""

__version__ = "0.1.0"
