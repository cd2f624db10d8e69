"""The web app fixtures (an app on the suite database, signed-in clients) for API specs."""

from tests.web.conftest import app, app_client, runtime, sleeps  # noqa: F401
