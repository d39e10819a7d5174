"""Whole ``GET /api/jobs`` pages kept between changes of the store.

A page is a pure function of the query and the store's state, and the
store's ``seq`` (the last journal record applied) changes with every
change. Keyed by path and raw (undecoded) query string and stamped with that ``seq``,
a cached page is served only while nothing has changed since it was built:
a dashboard polling the same page costs a dict look-up instead of a page
build, and nothing stale is ever served.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from aiohttp import web

#: At most this many pages are kept, and at most this many bytes of them (a page of 1,000 jobs
#: is ~700 KB): beyond either, the cache starts over, so its memory stays bounded whatever the
#: queries.
MAX_PAGES: Final = 64
MAX_BYTES: Final = 4 * 1024 * 1024


class Page(NamedTuple):
    """A built page: the JSON array body and the ``Link`` header of the next page, if any."""

    body: bytes
    link: str | None


class PageCache:
    """Pages by ``(path, raw query string)``, valid for one store ``seq`` at a time."""

    def __init__(self, *, max_pages: int = MAX_PAGES, max_bytes: int = MAX_BYTES) -> None:
        self._pages: dict[tuple[str, str], Page] = {}
        self._seq = -1
        self._bytes = 0
        self._max_pages = max_pages
        self._max_bytes = max_bytes

    def get(self, key: tuple[str, str], seq: int) -> Page | None:
        """Return the page built for ``key`` at store ``seq``, or ``None``."""
        if seq != self._seq:
            return None
        return self._pages.get(key)

    def put(self, key: tuple[str, str], seq: int, page: Page) -> None:
        """Keep ``page``, built for ``key`` at store ``seq``; pages of older seqs are dropped."""
        size = len(page.body)
        if seq != self._seq or len(self._pages) >= self._max_pages or self._bytes + size > self._max_bytes:
            self._pages.clear()
            self._bytes = 0
            self._seq = seq
        if size <= self._max_bytes:
            self._pages[key] = page
            self._bytes += size

    def __len__(self) -> int:
        return len(self._pages)


#: The app's page cache.
PAGE_CACHE: Final = web.AppKey("page_cache", PageCache)
