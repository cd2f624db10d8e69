"""imhost: the platform of an instant-messaging hosting provider."""

__version__ = "0.1.0"
