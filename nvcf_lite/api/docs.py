"""The API's own docs: the OpenAPI schema under /openapi, and Swagger UI served from the package.

Litestar's Swagger page loads its scripts, styles and icon from public CDNs, so on an offline
box it was blank. The files of `swagger-ui-dist` are vendored in `api/static/swagger-ui/` (see
the README there for their version and origin) and served at /openapi/static/swagger-ui/,
public like the schema itself (no `scopes` in opt, so the `authorize` guard lets them through).
"""

from __future__ import annotations

from pathlib import Path

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

from nvcf_lite import __version__
from nvcf_lite.api.openapi_problems import ProblemsJsonPlugin

OPENAPI_PATH = "/openapi"
STATIC_PATH = f"{OPENAPI_PATH}/static/swagger-ui"
SWAGGER_DIR = Path(__file__).parent / "static" / "swagger-ui"


def swagger_assets() -> Router:
    """GET /openapi/static/swagger-ui/{file}: the vendored Swagger UI files."""
    return create_static_files_router(
        path=STATIC_PATH,
        directories=[SWAGGER_DIR],
        name="swagger-ui",
        cache_control=CacheControlHeader(max_age=86400),
    )


def openapi_config() -> OpenAPIConfig:
    swagger = SwaggerRenderPlugin(
        js_url=f"{STATIC_PATH}/swagger-ui-bundle.js",
        css_url=f"{STATIC_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{STATIC_PATH}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{STATIC_PATH}/favicon-32x32.png'>",
    )
    return OpenAPIConfig(
        title="nvcf-lite",
        version=__version__,
        description="The NVIDIA Cloud Functions API on one machine",
        path=OPENAPI_PATH,
        render_plugins=[swagger, ProblemsJsonPlugin()],  # the first one answers /openapi
    )
