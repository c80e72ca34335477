"""The storage benchmark's reference point: PUT and GET of documents kept in a dict, under the
twin's uvicorn settings, so that what a twin's write or read costs beyond HTTP shows, and so
does the load generator's own ceiling.

It answers ``PUT`` and ``GET /api/storage/{namespace}/docs/{key}`` as the twin does (201 with
``{"key", "version", "updated"}`` and an ETag; the body back as written) and nothing else: no
auth, no database, no encryption, no checks (and ``GET /api/health``, to be waited on).

    python bench/bare_store.py --port 8472
"""

from __future__ import annotations

import argparse
import json
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def build() -> Starlette:
    """The app: a dict of (namespace, key) to (version, body)."""
    documents: dict[tuple[str, str], tuple[int, bytes]] = {}
    seq = [0]

    async def put(request: Request) -> Response:
        where = (request.path_params["namespace"], request.path_params["key"])
        body = await request.body()
        created = where not in documents
        seq[0] += 1
        documents[where] = (seq[0], body)
        answer = {"key": where[1], "version": seq[0], "updated": time.time()}
        return Response(
            json.dumps(answer),
            status_code=201 if created else 200,
            media_type="application/json",
            headers={"ETag": f'"{seq[0]}"'},
        )

    async def get(request: Request) -> Response:
        found = documents.get((request.path_params["namespace"], request.path_params["key"]))
        if found is None:
            return Response(b'{"error": {"code": "not_found"}}', 404)
        return Response(found[1], media_type="application/json", headers={"ETag": f'"{found[0]}"'})

    async def health(request: Request) -> Response:
        return Response(b'{"status": "ok"}', media_type="application/json")

    path = "/api/storage/{namespace}/docs/{key:path}"
    return Starlette(
        routes=[
            Route("/api/health", health, methods=["GET"]),
            Route(path, put, methods=["PUT"]),
            Route(path, get, methods=["GET"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # The same server settings `twin serve` uses (twin/cli.py): uvloop, httptools, no access log.
    uvicorn.run(
        build(),
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
