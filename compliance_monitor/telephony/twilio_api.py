"""Twilio's side of a call: ending it through the REST API, and checking that a media stream is Twilio's."""

from __future__ import annotations

import logging

import httpx
from twilio.request_validator import RequestValidator

from compliance_monitor.config import TwilioSettings
from compliance_monitor.messages import ControlResult, Outcome

log = logging.getLogger(__name__)


class TwilioApi:
    def __init__(self, settings: TwilioSettings) -> None:
        self.s = settings

    @property
    def can_hang_up(self) -> bool:
        return bool(self.s.account_sid and self.s.auth_token)

    async def complete_call(self, call_sid: str) -> ControlResult:
        """``POST /2010-04-01/Accounts/{AC}/Calls/{CA}.json Status=completed``: the call itself ends, both legs."""
        if not (self.s.account_sid and self.s.auth_token):
            return ControlResult(
                Outcome.NOT_SUPPORTED,
                "Twilio REST credentials not configured (CM_TWILIO__ACCOUNT_SID, CM_TWILIO__AUTH_TOKEN)",
            )
        url = f"{self.s.api_base_url.rstrip('/')}/2010-04-01/Accounts/{self.s.account_sid}/Calls/{call_sid}.json"
        auth = (self.s.account_sid, self.s.auth_token.get_secret_value())
        try:
            async with httpx.AsyncClient(timeout=self.s.timeout_s) as client:
                response = await client.post(url, data={"Status": "completed"}, auth=auth)
        except httpx.HTTPError as exc:
            return ControlResult(Outcome.FAILED, f"Twilio REST API unreachable: {type(exc).__name__}: {exc}"[:300])
        if response.is_success:
            return ControlResult(Outcome.DONE, f"Twilio call {call_sid} completed")
        return ControlResult(Outcome.FAILED, f"Twilio answered {response.status_code}: {response.text[:200]}")

    def signature_valid(self, url: str, signature: str | None) -> bool:
        """A websocket upgrade is signed like a webhook: HMAC of the wss URL as Twilio called it, no parameters."""
        if self.s.auth_token is None:
            return True
        if not signature:
            return False
        return bool(RequestValidator(self.s.auth_token.get_secret_value()).validate(url, {}, signature))
