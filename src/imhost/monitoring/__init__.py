"""Operation monitoring: probes from outside, probe state, incidents, uptime."""
