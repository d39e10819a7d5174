"""Request smuggling: ambiguous framing is refused whole, and the request hidden behind it never runs.

Each case sends, on one raw connection, an outer request whose length is
ambiguous (both ``Content-Length`` and ``Transfer-Encoding``, two lengths,
an obfuscated ``Transfer-Encoding``, bare LF line ends...) followed by an
inner request that would RUN a READY job if a parser read the framing the
other way. Both processes must answer exactly one 400 and close the
connection; the job stays READY and (behind the gateway) the engine is
never asked to run it.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import ADMIN_TOKEN, MakeEngine

# `engine` here is the gateway harness's; the engine-only tests use conftest's `make_engine`.
from tests.integration.gateway_harness import (  # noqa: F401  (fixtures)
    Engine,
    Gateway,
    User,
    clock,
    engine,
    gateway,
    make_gateway,
)

#: Outer request heads with ambiguous framing; ``{inner}`` is the smuggled request, ``{auth}`` extra headers.
CASES: dict[str, str] = {
    "content_length_and_chunked": (
        "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{inner}"
    ),
    "two_content_lengths": (
        "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
        "Content-Length: 2\r\nContent-Length: 200\r\n\r\n{{}}{inner}"
    ),
    "obfuscated_transfer_encoding": (
        "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{inner}"
    ),
    "transfer_encoding_list": (
        "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{inner}"
    ),
    "space_before_colon": (
        "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n{inner}"
    ),
    "signed_content_length": ("POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: +2\r\n\r\n{{}}{inner}"),
    "bare_lf_line_ends": ("POST {path} HTTP/1.1\nHost: x\n{auth_lf}Content-Length: 2\n\n{{}}{inner}"),
    "chunk_extension_with_bare_lf": (
        "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n2;\n{{}}\r\n0\r\n\r\n{inner}"
    ),
}


async def exchange(port: int, raw: str) -> bytes:
    """Send ``raw`` on a fresh connection and return all the server answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw.encode())
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()


def statuses(answer: bytes) -> list[int]:
    """The status of every response in ``answer``, walked by each response's ``Content-Length``."""
    found: list[int] = []
    while answer:
        head, _, rest = answer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        found.append(int(lines[0].split(b" ")[1]))
        length = next(
            (int(line.split(b":", 1)[1]) for line in lines[1:] if line.lower().startswith(b"content-length:")),
            len(rest),
        )
        answer = rest[length:]
    return found


def build(case: str, *, path: str, headers: dict[str, str], inner: str) -> str:
    """The raw bytes of one smuggling attempt."""
    auth = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return CASES[case].format(path=path, auth=auth, auth_lf=auth.replace("\r\n", "\n"), inner=inner)


#: The control: honest framing, so a pipelining server answers both requests and the inner one runs.
HONEST = (
    "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}{inner}"
)


class TestEngineSmuggling:
    async def test_control_the_inner_run_is_a_working_request(self, make_engine: MakeEngine) -> None:
        """With honest framing the same two requests get two answers and the job runs (the attack is real)."""
        engine = await make_engine()
        job = await engine.create("test.count")
        port = engine.client.server.port
        assert port is not None
        inner = _engine_inner(job["id"])
        answer = await exchange(
            port,
            HONEST.format(
                path="/api/jobs",
                auth=f"Authorization: Bearer {ADMIN_TOKEN}\r\n",
                inner=inner.replace("HTTP/1.1\r\n", "HTTP/1.1\r\nConnection: close\r\n", 1),
            ),
        )
        assert len(statuses(answer)) == 2, answer
        assert (await engine.wait_for(job["id"]))["status"] == "DONE"

    @pytest.mark.parametrize("case", sorted(CASES))
    async def test_ambiguous_framing_is_one_400_and_the_hidden_run_never_happens(
        self, make_engine: MakeEngine, case: str
    ) -> None:
        """The engine answers one 400, closes, and the smuggled RUN does not start the job."""
        engine = await make_engine()
        job = await engine.create("test.count")
        bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        inner = _engine_inner(job["id"])
        port = engine.client.server.port
        assert port is not None
        answer = await exchange(port, build(case, path="/api/jobs", headers=bearer, inner=inner))
        assert statuses(answer) == [400], answer
        await asyncio.sleep(0.2)
        assert (await engine.job(job["id"]))["status"] == "READY"


def _engine_inner(job_id: str) -> str:
    return (
        f"POST /api/jobs/{job_id}/run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    )


def _gateway_inner(gateway: Gateway, alice: User, job_id: str) -> tuple[dict[str, str], str]:
    """The signed-in headers of ``alice`` and a raw RUN of ``job_id`` through the gateway."""
    cookie = "; ".join(f"{c.key}={c.value}" for c in alice.client.session.cookie_jar)
    signed_in = {"Cookie": cookie, "X-CSRF-Token": alice.csrf, "Origin": gateway.origin}
    host = gateway.origin.split("://", 1)[1]
    inner = (
        f"POST /api/admin/engine/jobs/{job_id}/run HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        f"Cookie: {cookie}\r\nX-CSRF-Token: {alice.csrf}\r\nOrigin: {gateway.origin}\r\n"
        "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    )
    return signed_in, inner


class TestGatewaySmuggling:
    async def test_control_the_inner_run_is_a_working_request(self, engine: Engine, gateway: Gateway) -> None:  # noqa: F811
        """With honest framing the gateway answers both requests and forwards the RUN (the attack is real)."""
        alice: User = await gateway.login()
        job_id = await engine.create()
        signed_in, inner = _gateway_inner(gateway, alice, job_id)
        port = gateway.server.port
        assert port is not None
        auth = "".join(f"{k}: {v}\r\n" for k, v in signed_in.items())
        answer = await exchange(port, HONEST.format(path="/api/admin/engine/jobs", auth=auth, inner=inner))
        assert len(statuses(answer)) == 2, answer
        assert engine.count("POST", r"/run$") == 1

    @pytest.mark.parametrize("case", sorted(CASES))
    async def test_ambiguous_framing_is_one_400_and_the_engine_is_never_asked(
        self, engine: Engine, gateway: Gateway, case: str
    ) -> None:  # noqa: F811
        """The gateway answers one 400, closes, and never forwards the smuggled RUN."""
        alice: User = await gateway.login()
        job_id = await engine.create()
        signed_in, inner = _gateway_inner(gateway, alice, job_id)
        port = gateway.server.port
        assert port is not None
        answer = await exchange(port, build(case, path="/api/admin/engine/jobs", headers=signed_in, inner=inner))
        assert statuses(answer) == [400], answer
        await asyncio.sleep(0.2)
        assert engine.count("POST", r"/run$") == 0
        assert await engine.status(job_id) == "READY"
