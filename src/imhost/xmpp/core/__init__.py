"""Stream, parser, SASL, router, sessions, stream management and metering."""
