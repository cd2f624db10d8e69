"""The data plane: a multi-tenant XMPP server (RFC 6120/6121) talking to the control plane
only through :mod:`imhost.xmpp.ports`. See docs/xmpp.md."""
