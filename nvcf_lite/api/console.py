"""The web console at /console: static files shipped in the package (api/static/console/),
served by this process with no CDN and no build step; the pages call the API from the browser
with the key the user signs in with, so they can do what that key's scopes allow, no more.

Every answer under /console carries a strict Content-Security-Policy: scripts, styles,
images and connections from this origin only, no inline script or style, no framing. The files
are plain ES modules; every string a user controls is inserted as text (textContent), never
as markup. `[console] enabled = false` leaves the route out (404).
"""

from __future__ import annotations

from pathlib import Path

from litestar import Response, Router
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

CONSOLE_PATH = "/console"
CONSOLE_DIR = Path(__file__).parent / "static" / "console"
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


async def _secured(response: Response) -> Response:  # type: ignore[type-arg]
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


def console_files() -> Router:
    """GET /console (index.html) and /console/{file}: the console's pages and scripts."""
    return create_static_files_router(
        path=CONSOLE_PATH,
        directories=[CONSOLE_DIR],
        name="console",
        html_mode=True,
        after_request=_secured,
        # revalidated each load: a new server version's files are picked up at once
        cache_control=CacheControlHeader(no_cache=True),
    )
