"""The web dashboard at `/ui` on the orchestrator (8003): plain HTML, CSS and JavaScript
modules shipped in the package (`api/static/`), no build step and no CDN.

The files hold no data, so they are served without an API key even when auth is on; the
page asks for the key, keeps it in the tab's sessionStorage and sends it as `X-API-Key`
on every call to the APIs beside it, which still require it. A strict
Content-Security-Policy allows only this origin's own scripts, styles and API calls.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

UI_PATH = "/ui"
STATIC_DIRECTORY = Path(__file__).parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    # Revalidated on every load (ETag): an upgraded node serves its new page at once.
    "cache-control": "no-cache",
}


class DashboardFiles(StaticFiles):
    """The dashboard's static files, each answered with the security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at `/ui/` of `app` (`/ui` redirects there)."""
    # The first guess of a file's type reads the system's mime.types: here, while the app
    # is built, rather than on the event loop when the first page is asked for.
    mimetypes.init()

    @app.get(UI_PATH, include_in_schema=False)
    async def dashboard() -> RedirectResponse:
        # Relative, so the page also works behind a proxy that serves the API under a prefix.
        return RedirectResponse("ui/", status_code=308, headers=SECURITY_HEADERS)

    app.mount(UI_PATH, DashboardFiles(directory=STATIC_DIRECTORY, html=True), name="ui")
