"""A raw HTTP/1.1 client for the API tests: full control over Host, duplicated and missing headers.

aiohttp's and urllib's clients normalise or refuse some of the header values the
DNS-rebinding tests must send, so these tests write the request bytes themselves.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

#: Safety net so a broken server fails the test instead of hanging it (not a speed assertion).
IO_TIMEOUT = 20.0


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    headers: dict[str, list[str]]  # lower-case names
    body: bytes

    def header(self, name: str) -> str:
        """The first value of header ``name``, or "" when absent."""
        values = self.headers.get(name.lower())
        return values[0] if values else ""

    def json(self) -> Any:
        return json.loads(self.body)


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)


async def raw_request(
    address: str,
    port: int,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    body: bytes = b"",
    version: str = "HTTP/1.1",
) -> RawResponse:
    """Send one request exactly as given (plus Connection: close and Content-Length) and read the answer."""
    lines = [f"{method} {path} {version}", *(f"{k}: {v}" for k, v in headers), "Connection: close"]
    if body or method in ("POST", "PUT", "PATCH", "DELETE"):
        lines.append(f"Content-Length: {len(body)}")
    payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection(address, port)
        try:
            writer.write(payload)
            await writer.drain()
            return await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()

    raw = await asyncio.wait_for(exchange(), IO_TIMEOUT)
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed: dict[str, list[str]] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed.setdefault(name.strip().lower(), []).append(value.strip())
    if "chunked" in (parsed.get("transfer-encoding") or [""])[0].lower():
        rest = _dechunk(rest)
    return RawResponse(status=int(status_line.split()[1]), headers=parsed, body=rest)
