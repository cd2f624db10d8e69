"""Host-scoped IM modules (one per XEP or feature). API: ``api.py``; contract: README.md."""
