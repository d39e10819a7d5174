"""The panel's static assets and the favicon, served by name from a fixed list (no path is ever joined from a URL)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Final

from aiohttp import web

STATIC_DIR: Final = Path(__file__).parent.parent / "static"
FAVICON: Final = "favicon.ico"
#: ``/favicon.ico`` keeps the type browsers expect (the guessed one depends on the host's mime tables).
_ICON_HEADERS: Final = {"Content-Type": "image/x-icon"}


def static_files(root: Path) -> dict[str, Path]:
    """Return every regular file under ``root`` by its URL path (``js/main.js``); symlinks are left out."""
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


@functools.cache
def shipped_files() -> dict[str, Path]:
    """The files under :data:`STATIC_DIR`, listed once (on the first request): they ship with the package."""
    return static_files(STATIC_DIR)


async def asset(request: web.Request) -> web.StreamResponse:
    """``GET /static/{path}`` and ``GET /favicon.ico``: one of the panel's shipped files; anything else is a JSON 404.

    Only the files that ship with the panel, looked up by name: anything else
    is the JSON 404 of every other unknown path (aiohttp's static route
    answers a missing file with an empty, untyped 404 that the request log
    records as a 200). Browsers ask for ``/favicon.ico`` by themselves: a 404
    there is a console error.
    """
    name = request.match_info.get("path")
    file = shipped_files().get(FAVICON if name is None else name)
    if file is None:
        raise web.HTTPNotFound()
    return web.FileResponse(file, headers=_ICON_HEADERS if name is None else None)
