"""The panel's static assets, served by name from a fixed list (no path is ever joined from a URL)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web


def static_files(root: Path) -> dict[str, Path]:
    """Return every regular file under ``root`` by its URL path (``js/main.js``); symlinks are left out."""
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def static_handler(files: dict[str, Path]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Return the handler of ``GET /static/{path}`` serving ``files`` (see :func:`static_files`)."""

    async def static(request: web.Request) -> web.StreamResponse:
        """``GET /static/{path}``: one of the panel's assets; anything else is a JSON 404."""
        file = files.get(request.match_info["path"])
        if file is None:
            raise web.HTTPNotFound()
        return web.FileResponse(file)

    return static
