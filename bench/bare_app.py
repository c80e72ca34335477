"""The reference point for the benchmarks: a bare Starlette app under the twin's uvicorn settings.

It serves ``GET /api/health`` and ``GET /api/profile/`` as fixed JSON bodies (by default small
ones; ``run.py`` passes the exact bytes the twin answered, so both servers send the same sizes)
and does nothing else: no auth, no database, no middleware.

    python bench/bare_app.py --port 8471 [--health-body FILE] [--profile-body FILE]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

DEFAULT_HEALTH = b'{"status":"ok","did":"did:key:z6Mk","version":"0","locked":false}'
DEFAULT_PROFILE = b'{"display_name":"","bio":"","avatar":null,"updated":null}'


def build(health: bytes = DEFAULT_HEALTH, profile: bytes = DEFAULT_PROFILE) -> Starlette:
    """The app: two routes, each answering its fixed JSON body."""

    async def health_route(request: Request) -> Response:
        return Response(health, media_type="application/json")

    async def profile_route(request: Request) -> Response:
        return Response(profile, media_type="application/json")

    return Starlette(
        routes=[
            Route("/api/health", health_route, methods=["GET"]),
            Route("/api/profile/", profile_route, methods=["GET"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--health-body", type=Path)
    parser.add_argument("--profile-body", type=Path)
    args = parser.parse_args()
    app = build(
        args.health_body.read_bytes() if args.health_body else DEFAULT_HEALTH,
        args.profile_body.read_bytes() if args.profile_body else DEFAULT_PROFILE,
    )
    # The same server settings `twin serve` uses (twin/cli.py): uvloop, httptools, no access log.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        server_header=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
