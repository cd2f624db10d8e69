"""The ``imhost`` command."""
