"""The data plane's ports (:mod:`imhost.xmpp.ports`) on the database, one adapter per port.

Each adapter runs its queries (:mod:`imhost.hosting.repository`) through a shared
:class:`~imhost.hosting.dataplane.runner.DbRunner` (one transaction on a worker thread,
retried when the database refuses it for concurrency) and finds accounts through an
:class:`~imhost.hosting.dataplane.runner.AccountLookup` (the cached one of
:class:`~imhost.hosting.dataplane.auth.DbAccountAuth`); the host directory
(:class:`~imhost.hosting.dataplane.directory.DbHostDirectory`) fills the
:class:`~imhost.hosting.dataplane.hosts.HostCache` the others read.
:class:`~imhost.hosting.ports.DbBackend` builds them, owns them and runs their background
work.
"""
