"""Organizations, users, roles, sessions, MFA, API tokens, audit log, threat rules."""
