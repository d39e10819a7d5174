"""``GET /api/jobs?q=``: the name search (issue 16), on both stores."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from shared.contract import MAX_FILTER_CHARS
from shared.journal.chain import MemoryJournal
from tests.integration.engine.conftest import BOTH_STORES
from tests.integration.engine.harness import EngineServer, MakeEngineServer, auth

pytestmark = BOTH_STORES

NAMES = ("Nightly REINDEX", "reindex users", "Cache warm-up", "50%_off report", "Straße check", "back\\slash")


async def names(engine: EngineServer, query: str) -> tuple[list[str], str | None]:
    """The names a list query answers, newest first, and its ``Link`` header."""
    resp = await engine.client.get(f"/api/jobs?{query}", headers=auth())
    assert resp.status == 200, await resp.text()
    return [job["name"] for job in await resp.json()], resp.headers.get("Link")


@pytest.fixture
async def engine(make_engine_server: MakeEngineServer) -> EngineServer:
    """An engine holding one test.count job per name in :data:`NAMES`, created in that order."""
    server = await make_engine_server()
    for name in NAMES:
        await server.create("test.count", name=name)
    return server


class TestNameSearch:
    async def test_matches_a_substring_in_any_case(self, engine: EngineServer) -> None:
        """q=reindex finds both reindex jobs, whatever their case, newest first."""
        assert (await names(engine, "q=reindex"))[0] == ["reindex users", "Nightly REINDEX"]
        assert (await names(engine, "q=WARM"))[0] == ["Cache warm-up"]
        assert (await names(engine, "q=nothing-like-it"))[0] == []

    async def test_wildcards_are_plain_text(self, engine: EngineServer) -> None:
        """% and _ and a backslash match themselves only (the PostgreSQL ILIKE is escaped)."""
        assert (await names(engine, "q=" + quote("%_")))[0] == ["50%_off report"]
        assert (await names(engine, "q=" + quote("_")))[0] == ["50%_off report"]
        assert (await names(engine, "q=" + quote("%")))[0] == ["50%_off report"]
        assert (await names(engine, "q=" + quote("\\")))[0] == ["back\\slash"]

    async def test_combines_with_status_type_and_pages_keeping_q_in_the_link(self, engine: EngineServer) -> None:
        """q with status, type and limit: the Link of the next page keeps q (percent-encoded) and pages on."""
        first, link = await names(engine, "q=e&status=ready&type=test.count&limit=2")
        assert first == [n for n in reversed(NAMES) if "e" in n.casefold()][:2]
        assert link is not None
        assert "q=e" in link and "status=READY" in link and "type=test.count" in link
        seen = list(first)
        while link is not None:
            target = link[link.index("<") + 1 : link.index(">")]
            resp = await engine.client.get(target, headers=auth())
            assert resp.status == 200
            seen += [job["name"] for job in await resp.json()]
            link = resp.headers.get("Link")
        assert seen == [n for n in reversed(NAMES) if "e" in n.casefold()]
        assert (await names(engine, "q=reindex&status=done"))[0] == []
        last, link = await names(engine, "q=" + quote("x users") + "&limit=1")
        assert last == ["reindex users"] and link is None  # the only match: no next page

    async def test_the_link_percent_encodes_q(self, engine: EngineServer) -> None:
        """A q with spaces and reserved characters comes back in the Link percent-encoded, and that link works."""
        for name in ("a b&c=d 1", "a b&c=d 2"):
            await engine.create("test.count", name=name)
        found, link = await names(engine, "q=" + quote("b&c=d") + "&limit=1")
        assert found == ["a b&c=d 2"] and link is not None
        assert "q=b%26c%3Dd" in link
        target = link[link.index("<") + 1 : link.index(">")]
        resp = await engine.client.get(target, headers=auth())
        assert [job["name"] for job in await resp.json()] == ["a b&c=d 1"]

    @pytest.mark.parametrize("value", ["", "x" * (MAX_FILTER_CHARS + 1)])
    async def test_empty_or_too_long_is_invalid_field(self, engine: EngineServer, value: str) -> None:
        """q must be 1 to MAX_FILTER_CHARS characters: otherwise 400 invalid_field."""
        resp = await engine.client.get(f"/api/jobs?q={value}", headers=auth())
        assert resp.status == 400
        assert (await resp.json())["code"] == "invalid_field"

    async def test_the_longest_q_is_accepted(self, engine: EngineServer) -> None:
        """A q of exactly MAX_FILTER_CHARS characters is a valid search."""
        assert (await names(engine, "q=" + "x" * MAX_FILTER_CHARS))[0] == []


class TestSearchAfterRestart:
    async def test_a_replayed_store_searches_the_same(self, make_engine_server: MakeEngineServer) -> None:
        """The name keys are rebuilt by a replay: the same search answers the same jobs (embedded store)."""
        journal = MemoryJournal()
        first = await make_engine_server(journal=journal)
        for name in NAMES:
            await first.create("test.count", name=name)
        second = await make_engine_server(journal=journal)
        assert (await names(second, "q=REINDEX"))[0] == ["reindex users", "Nightly REINDEX"]
