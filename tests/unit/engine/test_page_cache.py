"""The list page cache: served only for the store seq it was built at, and bounded."""

from __future__ import annotations

from engine_hub.store.page_cache import Page, PageCache

KEY = ("/api/jobs", "limit=50")


class TestPageCache:
    def test_page_is_served_only_at_its_seq(self) -> None:
        """A page built at seq 7 is returned at seq 7 and never after the store changed."""
        cache = PageCache()
        cache.put(KEY, 7, Page(b"[1]", None))
        assert cache.get(KEY, 7) == Page(b"[1]", None)
        assert cache.get(KEY, 8) is None
        assert cache.get(("/engines/jobs", "limit=50"), 7) is None

    def test_newer_seq_drops_older_pages(self) -> None:
        """Putting a page of a newer seq forgets every page of the older one."""
        cache = PageCache()
        cache.put(KEY, 1, Page(b"[1]", None))
        cache.put(("/api/jobs", ""), 1, Page(b"[2]", None))
        cache.put(KEY, 2, Page(b"[3]", '<x>; rel="next"'))
        assert len(cache) == 1
        assert cache.get(("/api/jobs", ""), 2) is None
        assert cache.get(KEY, 2) == Page(b"[3]", '<x>; rel="next"')

    def test_page_count_and_bytes_are_bounded(self) -> None:
        """Whatever the queries, the cache never holds more than its page and byte limits."""
        cache = PageCache(max_pages=4, max_bytes=1000)
        for i in range(50):
            cache.put(("/api/jobs", f"before={i}"), 1, Page(b"x" * 300, None))
            assert len(cache) <= 4
            assert (
                sum(len((cache.get(("/api/jobs", f"before={j}"), 1) or Page(b"", None)).body) for j in range(50))
                <= 1000
            )
        cache.put(("/api/jobs", "huge"), 1, Page(b"x" * 5000, None))
        assert cache.get(("/api/jobs", "huge"), 1) is None
