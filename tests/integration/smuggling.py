"""Request smuggling attempts for both processes: ambiguous framing is refused whole, the hidden request never runs.

The tests are ``integration/engine/test_engine_smuggling.py`` and
``integration/gateway/test_gateway_smuggling.py``.

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
