"""Slack gateway role (8005): Slack's slash commands, Events API and interactivity.

Every request is checked against the app's signing secret over its raw body before it is
parsed (401 otherwise, logged without the body), answered within Slack's 3 seconds (the
run itself goes on in the pools), and recognised when Slack retries it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from agentrunner.api.edge import EdgeConfig, role_app
from agentrunner.api.errors import error_response
from agentrunner.domain.errors import DependencyUnavailableError
from agentrunner.logs import get_logger
from agentrunner.ports.slack import SlackRequestVerifier
from agentrunner.runtime.slack_gateway import SlackGateway, SlashCommand

log = get_logger(__name__)


def slack_app(
    edge: EdgeConfig,
    gateway: SlackGateway | None = None,
    verifier: SlackRequestVerifier | None = None,
    *,
    off_reason: str | None = None,
) -> FastAPI:
    """The Slack gateway's HTTP API. `verifier` None accepts unsigned requests (local
    development); `off_reason` says why the gateway is off (its routes answer 503 and
    `/health/ready` reports it, the process still serves)."""
    if off_reason is not None:

        async def gateway_off() -> None:
            raise DependencyUnavailableError(off_reason)

        edge = replace(edge, advisory={**edge.advisory, "slack_gateway": gateway_off})
    if verifier is not None:
        # Slack signs its requests and cannot send our API keys: the signature is the check.
        edge = replace(edge, key_exempt_prefixes=(*edge.key_exempt_prefixes, "/slack/"))
    app = role_app("slack", "agentrunner slack gateway", edge)
    routes = _SlackRoutes(gateway, verifier, off_reason)
    app.post(
        "/slack/commands",
        tags=["slack"],
        summary="Slash commands (form-encoded, signed by Slack)",
        openapi_extra=_COMMANDS_DOC,
    )(routes.commands)
    app.post(
        "/slack/events",
        tags=["slack"],
        summary="Events API callbacks (JSON, signed by Slack)",
        openapi_extra=_EVENTS_DOC,
    )(routes.events)
    app.post(
        "/slack/interactions",
        tags=["slack"],
        summary="Buttons and other interactivity (signed by Slack)",
        response_class=Response,  # an empty 200: Slack reads no body for a click
        openapi_extra=_INTERACTIONS_DOC,
    )(routes.interactions)
    return app


# The routes read their raw bodies (the signature covers the exact bytes), so their request
# and answer shapes are documented here, as Slack sends and reads them.
_SIGNED = (
    "Signed by Slack: `X-Slack-Signature` (v0=HMAC-SHA256 of `v0:{timestamp}:{body}` with the "
    "app's signing secret) and `X-Slack-Request-Timestamp` (within 5 minutes); 401 otherwise."
)
_TEXT = {"type": "string"}
_COMMANDS_DOC: dict[str, Any] = {
    "description": f"{_SIGNED} Answers within 3 s with an ephemeral acknowledgement; the agent's "
    "answer goes to `response_url` when it is ready.",
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["command"],
                    "properties": {
                        "command": {"type": "string", "pattern": "^/", "example": "/ask"},
                        **{
                            name: _TEXT
                            for name in ("text", "user_id", "channel_id", "team_id", "response_url", "trigger_id")
                        },
                        "ssl_check": {"enum": ["1"]},
                    },
                }
            }
        },
    },
    "responses": {
        "200": {
            "description": "The acknowledgement Slack shows (empty for an `ssl_check`)",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {"response_type": {"enum": ["ephemeral", "in_channel"]}, "text": _TEXT},
                    }
                }
            },
        }
    },
}
_EVENTS_DOC: dict[str, Any] = {
    "description": f"{_SIGNED} `url_verification` is answered with its challenge; an "
    "`event_callback` (app_mention, message) is acknowledged and run.",
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "type": {"enum": ["url_verification", "event_callback"]},
                        "challenge": _TEXT,
                        "team_id": _TEXT,
                        "event_id": _TEXT,
                        "event": {"type": "object"},
                    },
                }
            }
        },
    },
    "responses": {
        "200": {
            "description": "The challenge of a url_verification, else an acknowledgement",
            "content": {
                "application/json": {"schema": {"type": "object", "properties": {"challenge": _TEXT, "ok": {}}}}
            },
        }
    },
}
_INTERACTIONS_DOC: dict[str, Any] = {
    "description": f"{_SIGNED} A button click (block_actions): an answer to a clarification or "
    "to a tool call a run from Slack waits on (`toolcall:<answer>:<execution_id>:<token>`, from "
    "the run's own workspace only), else published on the bus. Acknowledged with an empty 200.",
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["payload"],
                    "properties": {"payload": {"type": "string", "description": "The interaction, as JSON text"}},
                }
            }
        },
    },
    "responses": {"200": {"description": "Acknowledged (empty body)"}},
}


class _SlackRoutes:
    """The three endpoints Slack calls, each verified first."""

    def __init__(
        self, gateway: SlackGateway | None, verifier: SlackRequestVerifier | None, off_reason: str | None
    ) -> None:
        self._gateway = gateway
        self._verifier = verifier
        self._off_reason = off_reason or "the Slack gateway is off"

    async def _verified(self, request: Request) -> tuple[bytes, SlackGateway | None, Response | None]:
        body = await request.body()
        if self._gateway is None:
            return body, None, error_response(503, "dependency_unavailable", self._off_reason)
        if self._verifier is not None:
            headers = {name.lower(): value for name, value in request.headers.items()}
            problem = self._verifier.problem(body, headers)
            if problem is not None:
                log.warning("slack request refused", path=request.url.path, reason=problem, body_bytes=len(body))
                return body, None, error_response(401, "unauthorized", f"not a valid Slack request: {problem}")
        return body, self._gateway, None

    async def commands(self, request: Request) -> Response:
        body, gateway, refused = await self._verified(request)
        if gateway is None:
            return refused or Response(status_code=503)
        form = _form(body)
        if form.get("ssl_check") == "1":  # Slack checking the certificate of a command's URL
            return JSONResponse({})
        if not form.get("command", "").startswith("/"):
            return error_response(400, "bad_request", "a slash command's form needs a `command` field like /ask")
        command = SlashCommand(
            command=form["command"],
            text=form.get("text", ""),
            user_id=form.get("user_id", ""),
            channel_id=form.get("channel_id", ""),
            team_id=form.get("team_id", ""),
            response_url=form.get("response_url", ""),
            trigger_id=form.get("trigger_id", ""),
            request_key=_request_key(request, body),
        )
        ack = await gateway.command(command)
        return JSONResponse({"response_type": "ephemeral" if ack.ephemeral else "in_channel", "text": ack.text})

    async def events(self, request: Request) -> Response:
        body, gateway, refused = await self._verified(request)
        if gateway is None:
            return refused or Response(status_code=503)
        try:
            envelope = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error_response(400, "invalid_json", "an Events API request body must be JSON")
        if not isinstance(envelope, dict):
            return error_response(400, "bad_request", "an Events API request body must be a JSON object")
        if envelope.get("type") == "url_verification":
            return JSONResponse({"challenge": envelope.get("challenge", "")})
        if envelope.get("type") == "event_callback":
            retry = request.headers.get("x-slack-retry-num")
            if retry:
                log.info("slack retried an event", retry_num=retry, reason=request.headers.get("x-slack-retry-reason"))
            await gateway.event(envelope, retry_num=retry)
        return JSONResponse({"ok": True})

    async def interactions(self, request: Request) -> Response:
        body, gateway, refused = await self._verified(request)
        if gateway is None:
            return refused or Response(status_code=503)
        try:
            payload = json.loads(_form(body).get("payload", ""))
        except json.JSONDecodeError:
            return error_response(400, "bad_request", "an interaction's form needs a JSON `payload` field")
        if not isinstance(payload, dict):
            return error_response(400, "bad_request", "an interaction's payload must be a JSON object")
        misshapen = _misshapen(payload)
        if misshapen:
            return error_response(400, "bad_request", f"an interaction's {misshapen}")
        await gateway.interaction(payload, request_key=_request_key(request, body))
        return Response(status_code=200)


# The parts of an interaction the gateway reads, by the shape Slack sends them in.
_OBJECTS = ("user", "team", "channel", "container", "message")


def _misshapen(payload: dict[str, Any]) -> str | None:
    """What of a signed interaction is not shaped as Slack sends it (the gateway reads these
    parts as objects), or None. A payload shaped otherwise is refused, not half-read."""
    for name in _OBJECTS:
        if payload.get(name) is not None and not isinstance(payload[name], dict):
            return f"`{name}` must be a JSON object"
    actions = payload.get("actions")
    if actions is None:
        return None
    if not isinstance(actions, list) or not all(isinstance(action, dict) for action in actions):
        return "`actions` must be a list of JSON objects"
    for action in actions:
        if action.get("selected_option") is not None and not isinstance(action["selected_option"], dict):
            return "action's `selected_option` must be a JSON object"
    return None


def _form(body: bytes) -> dict[str, str]:
    """A form body's fields (the first value of each)."""
    fields: dict[str, Any] = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def _request_key(request: Request, body: bytes) -> str:
    """What identifies a request across replays: its signature (HMAC of timestamp and body),
    or with verification off a hash of the same."""
    signature = request.headers.get("x-slack-signature")
    if signature:
        return signature
    stamp = request.headers.get("x-slack-request-timestamp", "")
    return hashlib.sha256(stamp.encode() + b":" + body).hexdigest()
