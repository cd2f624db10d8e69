"""The security headers every answer carries (the app's middleware sets them; the page for an
unexpected error, which is made outside that middleware, sets them itself)."""

from __future__ import annotations

# Only this site's own files: no inline script or style, no other origin (the API docs page's
# Swagger UI is served from the package too).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
}
