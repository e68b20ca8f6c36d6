"""FreeSWITCH event socket (ESL, inbound mode): ``uuid_kill`` to halt, ``uuid_broadcast`` to whisper.

One short connection per command: ``auth/request`` → ``auth <password>`` → ``command/reply +OK`` →
``api <command>`` → ``api/response`` (body of Content-Length bytes, ``+OK`` or ``-ERR ...``).
"""

from __future__ import annotations

import asyncio
import re

from compliance_monitor.config import EslSettings
from compliance_monitor.messages import ControlResult, Outcome

_SAFE = re.compile(r"^[A-Za-z0-9_.:/@+=-]{1,200}$")  # channel uuids
_SOUND = re.compile(r"^[^\s]{1,300}$")  # a file path or tone_stream://...: one argument, no newlines


class EslError(Exception):
    pass


async def _read_message(reader: asyncio.StreamReader) -> tuple[dict[str, str], str]:
    headers: dict[str, str] = {}
    while True:
        line = (await reader.readline()).decode("utf-8", "replace")
        if not line:
            raise EslError("connection closed")
        line = line.rstrip("\r\n")
        if not line:
            if headers:
                break
            continue
        key, _, value = line.partition(":")
        headers[key.strip()] = value.strip()
    length = int(headers.get("Content-Length", "0") or 0)
    body = (await reader.readexactly(length)).decode("utf-8", "replace") if length else ""
    return headers, body


class EslClient:
    def __init__(self, settings: EslSettings) -> None:
        self.settings = settings

    async def api(self, command: str) -> str:
        """Run one ``api`` command; the response body (``+OK ...`` / ``-ERR ...``)."""
        s = self.settings
        if s.host is None:
            raise EslError("esl.host is not set")
        async with asyncio.timeout(s.timeout_s):
            reader, writer = await asyncio.open_connection(s.host, s.port)
            try:
                headers, _ = await _read_message(reader)
                if headers.get("Content-Type") != "auth/request":
                    raise EslError(f"expected auth/request, got {headers.get('Content-Type')!r}")
                writer.write(f"auth {s.password.get_secret_value()}\n\n".encode())
                await writer.drain()
                headers, _ = await _read_message(reader)
                if not headers.get("Reply-Text", "").startswith("+OK"):
                    raise EslError(f"auth refused: {headers.get('Reply-Text', '')[:80]}")
                writer.write(f"api {command}\n\n".encode())
                await writer.drain()
                while True:
                    headers, body = await _read_message(reader)
                    if headers.get("Content-Type") == "api/response":
                        return body.strip()
            finally:
                writer.close()

    async def _run(self, command: str, done: str) -> ControlResult:
        try:
            body = await self.api(command)
        except (OSError, TimeoutError, EslError, ValueError) as exc:
            return ControlResult(Outcome.FAILED, f"ESL: {exc or type(exc).__name__}")
        if body.startswith("+OK"):
            return ControlResult(Outcome.DONE, done)
        return ControlResult(Outcome.FAILED, f"ESL: {body[:120]}")

    async def kill(self, uuid: str) -> ControlResult:
        if not _SAFE.match(uuid):
            return ControlResult(Outcome.FAILED, "not a channel uuid")
        return await self._run(f"uuid_kill {uuid}", f"uuid_kill {uuid}")

    async def whisper(self, agent_uuid: str, sound: str) -> ControlResult:
        if not (_SAFE.match(agent_uuid) and _SOUND.match(sound)):
            return ControlResult(Outcome.FAILED, "not a channel uuid or sound path")
        return await self._run(f"uuid_broadcast {agent_uuid} {sound} aleg", f"played {sound} to {agent_uuid}")
