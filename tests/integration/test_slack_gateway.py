"""The Slack gateway end to end: requests signed exactly as Slack signs them reach a real
node (in-memory bus and RabbitMQ), run their agent once however often they arrive, and
the answer comes back to a fake Slack through slack_sdk."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from uuid import uuid4

import httpx
import pytest

from agentrunner.cluster import plan
from agentrunner.domain.errors import ConfigError, LLMBadRequestError
from agentrunner.domain.event import Event
from agentrunner.domain.llm import LLMRequest
from agentrunner.domain.plan import Clarification, ClarificationKind, PlanRun
from agentrunner.node import Node
from agentrunner.settings import Settings
from tests.fakes.slack_server import (
    BOT_TOKEN,
    SIGNING_SECRET,
    FakeSlack,
    command_body,
    eventually,
    slack_headers,
)
from tests.integration.conftest import BUSES, node_on
from tests.ports import free_port

AGENT = "name: assistant\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: scripted, model: s}\n"
FORM = "application/x-www-form-urlencoded"
SLACK_AUTH_KEY = "k-slack-auth-0123456789abcdef012345678"


def _answer(request: LLMRequest) -> str:
    return f"answer to: {request.messages[-1].content}"


async def _post(
    http: httpx.AsyncClient, path: str, body: bytes, content_type: str = FORM, **headers: str
) -> httpx.Response:
    return await http.post(path, content=body, headers={"content-type": content_type, **slack_headers(body), **headers})


def _client(node: Node) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=node.apps()["slack"])
    return httpx.AsyncClient(transport=transport, base_url="http://slack", timeout=10)


async def _watch(node: Node, *patterns: str) -> list[Event]:
    seen: list[Event] = []

    async def keep(event: Event) -> None:
        seen.append(event)

    await node.bus.subscribe(f"test.{uuid4().hex[:8]}", list(patterns), keep, exclusive=True)
    return seen


def _settings(slack: FakeSlack, **extra: Any) -> dict[str, Any]:
    return {
        "slack_signing_secret": SIGNING_SECRET,
        "slack_bot_token": BOT_TOKEN,
        "slack_api_url": slack.api_url,
        "egress_allowed_networks": ("127.0.0.0/8",),  # the fake Slack listens on loopback
        "slack_commands": {"/ask": "assistant"},
        "slack_default_agent": "assistant",
        "bus_retry_delays": (0.2, 0.2, 0.2),
        **extra,
    }


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(retry_after=0) as fake:
        yield fake


@pytest.mark.parametrize("bus", BUSES)
async def test_a_signed_command_is_acked_before_the_agent_ends_then_answered_at_its_response_url(
    bus: str, tmp_path: Path, slack: FakeSlack
) -> None:
    release = asyncio.Event()

    async def slow(request: LLMRequest) -> str:
        await asyncio.wait_for(release.wait(), 30)
        return _answer(request)

    async with node_on(bus, tmp_path, {"assistant.yml": AGENT}, script=slow, **_settings(slack)) as node:
        seen = await _watch(node, "slack.command.#")
        async with _client(node) as http:
            body = command_body("/ask", "What is the capital of France?", response_url=slack.response_url("c1"))
            began = time.monotonic()
            ack = await _post(http, "/slack/commands", body)
            acked_in = time.monotonic() - began
        assert ack.status_code == 200
        assert ack.json()["response_type"] == "ephemeral"
        assert "Working on it" in ack.json()["text"]
        assert acked_in < 3.0, "Slack gives a command 3 seconds"
        assert slack.messages() == [], "the agent has not finished: nothing answered yet"
        release.set()
        [answer] = await slack.wait_for(1, "/response/c1")
        [event] = await eventually(lambda: list(seen))
        executions = (await node.store.queries.list_executions(agent="assistant")).items

    assert answer.body["text"] == "answer to: What is the capital of France?"
    assert event.topic == "slack.command.ask"
    assert {k: event.payload[k] for k in ("user_id", "channel_id", "team_id", "text", "trigger_id")} == {
        "user_id": "U2147483697",
        "channel_id": "C2147483705",
        "team_id": "T0001",
        "text": "What is the capital of France?",
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
    }
    assert event.payload["response_url"] == slack.response_url("c1")
    assert event.payload["trace_id"] == event.trace_id == executions[0].trace_id
    assert event.payload["execution_id"] == executions[0].execution_id
    assert len(executions) == 1
    assert executions[0].input["source"] == "slack"
    assert executions[0].input["channel_id"] == "C2147483705"


@pytest.mark.parametrize("bus", BUSES)
async def test_a_replayed_command_and_a_retried_event_run_once(bus: str, tmp_path: Path, slack: FakeSlack) -> None:
    async with node_on(bus, tmp_path, {"assistant.yml": AGENT}, script=_answer, **_settings(slack)) as node:
        async with _client(node) as http:
            body = command_body("/ask", "once please", response_url=slack.response_url("c2"))
            headers = slack_headers(body)
            first = await http.post("/slack/commands", content=body, headers={"content-type": FORM, **headers})
            again = await http.post("/slack/commands", content=body, headers={"content-type": FORM, **headers})
            event = _mention("Ev1", "<@U0BOT> hello there")
            mention = await _post(http, "/slack/events", event, "application/json")
            retried = await _post(
                http,
                "/slack/events",
                event,
                "application/json",
                **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"},
            )
        await slack.wait_for(1, "/response/c2")
        [post] = await slack.wait_for(1, "chat.postMessage")
        await asyncio.sleep(0.5)  # time for a second run to show up, if there were one
        executions = (await node.store.queries.list_executions(agent="assistant")).items

    assert (first.status_code, again.status_code, mention.status_code, retried.status_code) == (200, 200, 200, 200)
    assert "Already on it" in again.json()["text"]
    assert sorted(e.input["prompt"] for e in executions) == ["hello there", "once please"]
    assert len(slack.messages("/response/c2")) == 1
    assert len(slack.messages("chat.postMessage")) == 1
    assert post.body == {"channel": "C1", "text": "answer to: hello there", "thread_ts": "1700000000.000100"}


def _mention(event_id: str, text: str, **event: Any) -> bytes:
    return json.dumps(
        {
            "type": "event_callback",
            "team_id": "T0001",
            "api_app_id": "A1",
            "event_id": event_id,
            "event_time": 1700000000,
            "event": {
                "type": "app_mention",
                "user": "U1",
                "text": text,
                "ts": "1700000000.000100",
                "channel": "C1",
                **event,
            },
        }
    ).encode()


async def test_requests_not_signed_by_slack_are_refused_and_run_nothing(tmp_path: Path, slack: FakeSlack) -> None:
    async with node_on("memory", tmp_path, {"assistant.yml": AGENT}, script=_answer, **_settings(slack)) as node:
        async with _client(node) as http:
            body = command_body("/ask", "hi", response_url=slack.response_url())
            wrong = await http.post(
                "/slack/commands", content=body, headers={"content-type": FORM, **slack_headers(body, "not-the-secret")}
            )
            stale = await http.post(
                "/slack/commands",
                content=body,
                headers={"content-type": FORM, **slack_headers(body, timestamp=int(time.time()) - 6 * 60)},
            )
            unsigned = await http.post(
                "/slack/events", content=_mention("Ev2", "hi"), headers={"content-type": "application/json"}
            )
            tampered = await http.post(
                "/slack/interactions",
                content=b"payload=%7B%7D",
                headers={"content-type": FORM, **slack_headers(b"payload=%7B%22x%22%3A1%7D")},
            )
        await asyncio.sleep(0.3)
        executions = (await node.store.queries.list_executions(agent="assistant")).items

    assert [r.status_code for r in (wrong, stale, unsigned, tampered)] == [401, 401, 401, 401]
    assert wrong.json()["error"]["code"] == "unauthorized"
    assert "5 minutes" in stale.json()["error"]["message"]
    assert "missing" in unsigned.json()["error"]["message"]
    assert executions == []
    assert slack.messages() == []


async def test_with_api_auth_on_slack_routes_take_slacks_signature_instead_of_an_api_key(
    tmp_path: Path, slack: FakeSlack
) -> None:
    settings = _settings(slack, enable_api_auth=True, api_keys=f"slack:{SLACK_AUTH_KEY}")
    agents = {"assistant.yml": AGENT}
    async with node_on("memory", tmp_path, agents, script=_answer, **settings) as node, _client(node) as http:
        body = command_body("/ask", "signed, no key", response_url=slack.response_url("auth"))
        signed = await _post(http, "/slack/commands", body)
        forged = await http.post(
            "/slack/commands", content=body, headers={"content-type": FORM, **slack_headers(body, "guess")}
        )
        metrics = await http.get("/metrics")
        metrics_with_key = await http.get("/metrics", headers={"X-API-Key": SLACK_AUTH_KEY})
        await slack.wait_for(1, "/response/auth")

    assert signed.status_code == 200, signed.text
    assert forged.status_code == 401
    assert "not a valid Slack request" in forged.json()["error"]["message"]
    assert (metrics.status_code, metrics_with_key.status_code) == (401, 200), "the rest of the role keeps its key"


async def test_url_verification_bot_messages_and_edits(tmp_path: Path, slack: FakeSlack) -> None:
    async with node_on("memory", tmp_path, {"assistant.yml": AGENT}, script=_answer, **_settings(slack)) as node:
        seen = await _watch(node, "slack.#")
        async with _client(node) as http:
            challenge = json.dumps(
                {
                    "type": "url_verification",
                    "token": "t",
                    "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                }
            )
            answered = await _post(http, "/slack/events", challenge.encode(), "application/json")
            bot = await _post(http, "/slack/events", _mention("Ev3", "<@U0BOT> hi", bot_id="B1"), "application/json")
            edit = await _post(
                http,
                "/slack/events",
                _mention("Ev4", "hi", type="message", subtype="message_changed"),
                "application/json",
            )
        await asyncio.sleep(0.3)
        executions = (await node.store.queries.list_executions(agent="assistant")).items

    assert answered.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}
    assert (bot.status_code, edit.status_code) == (200, 200)
    assert executions == []
    assert seen == []


async def test_unknown_commands_and_agents_get_a_clear_ephemeral_answer(tmp_path: Path, slack: FakeSlack) -> None:
    async with node_on("memory", tmp_path, {"assistant.yml": AGENT}, script=_answer, **_settings(slack)) as node:
        async with _client(node) as http:
            unknown = await _post(http, "/slack/commands", command_body("/deploy", "now"))
            nobody = await _post(http, "/slack/commands", command_body("/agent", "ghost do it"))
            usage = await _post(http, "/slack/commands", command_body("/agent", ""))
            ssl_check = await _post(http, "/slack/commands", b"ssl_check=1&token=x")
            no_command = await _post(http, "/slack/commands", b"text=hello")
            named = await _post(
                http,
                "/slack/commands",
                command_body("/agent", "assistant summarise", response_url=slack.response_url("a1")),
            )
        [answer] = await slack.wait_for(1, "/response/a1")

    assert all(
        r.status_code == 200 and r.json()["response_type"] == "ephemeral" for r in (unknown, nobody, usage, named)
    )
    assert "`/deploy` is not routed" in unknown.json()["text"]
    assert "/ask` → assistant" in unknown.json()["text"]
    assert "`/agent ghost` is not allowed here: Slack may run assistant" in nobody.json()["text"]
    assert "Usage" in usage.json()["text"]
    assert ssl_check.status_code == 200
    assert no_command.status_code == 400
    assert answer.body["text"] == "answer to: summarise"


SUBSCRIBER = AGENT.replace("assistant", "listener") + 'event_subscriptions: ["slack.command.ask"]\n'


async def test_an_agent_routed_and_subscribed_runs_once_and_subscribers_are_answered_too(
    tmp_path: Path, slack: FakeSlack
) -> None:
    routed_and_subscribed = AGENT + 'event_subscriptions: ["slack.command.ask"]\n'
    agents = {"assistant.yml": routed_and_subscribed, "listener.yml": SUBSCRIBER}
    async with node_on("memory", tmp_path, agents, script=_answer, **_settings(slack)) as node:
        async with _client(node) as http:
            ack = await _post(
                http, "/slack/commands", command_body("/ask", "who runs?", response_url=slack.response_url("s1"))
            )
        answers = await slack.wait_for(2, "/response/s1")
        await asyncio.sleep(0.3)
        runs = (await node.store.queries.list_executions()).items

    assert ack.status_code == 200
    assert sorted(run.agent for run in runs) == ["assistant", "listener"], "each agent once"
    assert [a.body["text"] for a in answers] == ["answer to: who runs?"] * 2


async def test_a_failed_run_is_answered_with_a_clear_error(tmp_path: Path, slack: FakeSlack) -> None:
    def broken(_: LLMRequest) -> str:
        raise LLMBadRequestError("the model's context is too long")

    failing = AGENT.replace("llm_config:", "retry_config: {max_attempts: 1}\nllm_config:")
    async with node_on("memory", tmp_path, {"assistant.yml": failing}, script=broken, **_settings(slack)) as node:
        async with _client(node) as http:
            await _post(http, "/slack/commands", command_body("/ask", "hi", response_url=slack.response_url("f1")))
        [answer] = await slack.wait_for(1, "/response/f1")
        [run] = (await node.store.queries.list_executions()).items

    assert answer.body["text"].startswith(":warning: assistant could not answer (failed)")
    assert "context is too long" in answer.body["text"]
    assert run.execution_id in answer.body["text"]


async def test_a_reply_slack_refuses_for_a_while_is_delivered_later_once(tmp_path: Path, slack: FakeSlack) -> None:
    async with node_on("memory", tmp_path, {"assistant.yml": AGENT}, script=_answer, **_settings(slack)) as node:
        slack.fail_with(503, 503)
        async with _client(node) as http:
            await _post(http, "/slack/commands", command_body("/ask", "later", response_url=slack.response_url("r1")))
        [answer] = await slack.wait_for(1, "/response/r1")
        await asyncio.sleep(0.6)

    assert len(slack.refused) == 2, "Slack failed twice: the bus delivered the reply again"
    assert answer.body["text"] == "answer to: later"
    assert len(slack.messages("/response/r1")) == 1


async def test_a_long_answer_is_split_into_messages_slack_accepts(tmp_path: Path, slack: FakeSlack) -> None:
    long = "\n".join(f"line {i} " + "x" * 90 for i in range(100))  # ~10,000 characters
    async with node_on("memory", tmp_path, {"assistant.yml": AGENT}, script=lambda _: long, **_settings(slack)) as node:
        async with _client(node) as http:
            await _post(http, "/slack/events", _mention("Ev9", "<@U0BOT> long please"), "application/json")
        posts = await slack.wait_for(4, "chat.postMessage")
        await asyncio.sleep(0.3)

    assert len(slack.messages("chat.postMessage")) == 4
    assert all(len(p.body["text"]) <= 3000 for p in posts)
    assert "".join(p.body["text"] for p in posts) == long
    assert {p.body["thread_ts"] for p in posts} == {"1700000000.000100"}


async def _stored_question(node: Node) -> None:
    """Plan run `run1` from Slack, asking `c1`: a clarification event is acted on only for
    a question the store holds, sent where the stored run came from (issue 19)."""
    origin = {"source": "slack", "channel_id": "C1", "thread_ts": "1700000000.000100", "user_id": "U1"}
    asked = Clarification(
        id="c1",
        run_id="run1",
        step_id="s1",
        question="Deploy to production?",
        kind=ClarificationKind.CONFIRM,
        default="no",
    )
    await node.store.plan_runs.create_plan_run(
        PlanRun(id="run1", agent="assistant", origin=origin, clarifications=[asked], trace_id="t" * 32)
    )


async def test_buttons_answer_clarifications_and_other_actions_are_published(tmp_path: Path, slack: FakeSlack) -> None:
    async with node_on("memory", tmp_path, {"assistant.yml": AGENT}, script=_answer, **_settings(slack)) as node:
        await _stored_question(node)
        seen = await _watch(node, "clarification.answered.#", "slack.interaction.#")
        async with _client(node) as http:
            for action_id, value in (("clarify:run1:c1", "yes"), ("clarify:run1:c1", "no"), ("approve-deploy", "go")):
                payload = {
                    "type": "block_actions",
                    "user": {"id": "U7", "username": "ann"},
                    "team": {"id": "T0001"},
                    "channel": {"id": "C1"},
                    "response_url": slack.response_url("i1"),
                    "trigger_id": "t1",
                    "message": {
                        "text": "Deploy now?",
                        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": ":question: Deploy now?"}}],
                    },
                    "actions": [{"action_id": action_id, "block_id": "b1", "value": value, "type": "button"}],
                }
                response = await _post(
                    http, "/slack/interactions", urlencode({"payload": json.dumps(payload)}).encode()
                )
                assert response.status_code == 200
        answered, other = await eventually(lambda: seen if len(seen) >= 2 else None)
        [marked] = await slack.wait_for(1, "/response/i1")
        await asyncio.sleep(0.3)

    assert len(seen) == 2, "a second click on the same question answers nothing"
    assert answered.topic == "clarification.answered.run1"
    contract = {k: answered.payload[k] for k in ("run_id", "clarification_id", "answer", "answered_by")}
    assert contract == {"run_id": "run1", "clarification_id": "c1", "answer": "yes", "answered_by": "U7"}
    assert marked.body["replace_original"] is True, "the question's buttons are replaced by the answer"
    assert marked.body["text"] == ":white_check_mark: Deploy now?\n<@U7> answered *yes*"
    assert other.topic == "slack.interaction.approve-deploy"
    assert other.payload["value"] == "go"
    assert other.payload["user_id"] == "U7"


async def test_a_clarification_asked_from_slack_is_posted_in_its_thread_with_buttons(
    tmp_path: Path, slack: FakeSlack
) -> None:
    async with node_on("memory", tmp_path, {"assistant.yml": AGENT}, script=_answer, **_settings(slack)) as node:
        await _stored_question(node)
        slack.fail_with(429)  # rate-limited first: waited out after Retry-After
        question = {
            "run_id": "run1",
            "clarification_id": "c1",
            "step_id": "s1",
            "question": "Deploy to production?",
            "kind": "confirm",
            "options": [],
            "default": "no",
            "origin": {"source": "slack", "channel_id": "C1", "thread_ts": "1700000000.000100", "user_id": "U1"},
        }
        await node.bus.publish(Event(topic="clarification.requested.run1", payload=question, trace_id="t" * 32))
        [post] = await slack.wait_for(1, "chat.postMessage")

    assert post.body["channel"] == "C1"
    assert post.body["thread_ts"] == "1700000000.000100"
    buttons = [e for block in post.body["blocks"] if block["type"] == "actions" for e in block["elements"]]
    assert [(b["action_id"], b["value"]) for b in buttons] == [("clarify:run1:c1", "yes"), ("clarify:run1:c1", "no")]
    assert len(slack.refused) == 1


async def test_verification_off_for_development_accepts_unsigned_requests(tmp_path: Path, slack: FakeSlack) -> None:
    settings = _settings(slack, slack_verify_signatures=False)
    del settings["slack_signing_secret"]
    async with node_on("memory", tmp_path, {"assistant.yml": AGENT}, script=_answer, **settings) as node:
        async with _client(node) as http:
            body = command_body("/ask", "dev", response_url=slack.response_url("d1"))
            ack = await http.post("/slack/commands", content=body, headers={"content-type": FORM})
        [answer] = await slack.wait_for(1, "/response/d1")

    assert ack.status_code == 200
    assert answer.body["text"] == "answer to: dev"


def test_the_slack_role_alone_refuses_to_start_without_its_signing_secret(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, rabbitmq_url="amqp://guest:guest@127.0.0.1:5672/")
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
        Node(settings, roles=["slack"])
    Node(settings, roles=["orchestrator"])  # roles without Slack do not need it
    Node(settings, roles=["slack"], slack_optional=True)  # `serve slack --slack-optional`: gateway off
    [slack_process] = [command for role, command, _ in plan(settings, 1) if role == "slack"]
    assert slack_process[-2:] == ["slack", "--slack-optional"], "`cluster up` runs for users without Slack too"


async def test_up_without_a_signing_secret_serves_without_slack_and_says_so(tmp_path: Path) -> None:
    async with node_on("memory", tmp_path, {"assistant.yml": AGENT}, script=_answer) as node, _client(node) as http:
        ready = await http.get("/health/ready")
        command = await _post(http, "/slack/commands", command_body("/ask", "hi"))

    assert ready.status_code == 200
    assert ready.json()["degraded"] == ["slack_gateway"]
    assert "SLACK_SIGNING_SECRET is not set" in ready.json()["checks"]["slack_gateway"]
    assert command.status_code == 503
    assert "SLACK_SIGNING_SECRET" in command.json()["error"]["message"]


async def test_a_request_that_failed_on_our_side_runs_when_slack_retries_it(tmp_path: Path, slack: FakeSlack) -> None:
    listener = AGENT.replace("assistant", "listener") + 'event_subscriptions: ["slack.command.listen"]\n'
    async with node_on("memory", tmp_path, {"listener.yml": listener}, script=_answer, **_settings(slack)) as node:
        body = command_body("/listen", "are you there?", response_url=slack.response_url("l1"))
        headers = {"content-type": FORM, **slack_headers(body)}
        async with _client(node) as http:
            await node.bus.close(0)  # the broker goes away: nothing can be accepted
            failed = await http.post("/slack/commands", content=body, headers=headers)
            await node.bus.start()
            seen = await _watch(node, "slack.command.#")
            retried = await http.post("/slack/commands", content=body, headers={**headers, "X-Slack-Retry-Num": "1"})
            again = await http.post("/slack/commands", content=body, headers={**headers, "X-Slack-Retry-Num": "2"})
        await asyncio.sleep(0.3)

    assert failed.status_code == 503
    assert (retried.status_code, again.status_code) == (200, 200)
    assert "Working on it: listener" in retried.json()["text"]
    assert "Already on it" in again.json()["text"]
    assert [event.payload["text"] for event in seen] == ["are you there?"]


async def test_a_routed_command_accepted_while_the_broker_is_away_is_run_and_announced_later(
    tmp_path: Path, slack: FakeSlack
) -> None:
    """The run and the request's event are recorded together: neither is lost when the
    broker fails between the ack and the publish (the event used to be published on its
    own after the run was recorded, and dropped with a log line when that failed)."""
    agents = {"assistant.yml": AGENT, "listener.yml": SUBSCRIBER}
    async with node_on("memory", tmp_path, agents, script=_answer, **_settings(slack)) as node:
        body = command_body("/ask", "still there?", response_url=slack.response_url("b1"))
        async with _client(node) as http:
            await node.bus.close(0)  # the broker goes away after the recording, before the publish
            ack = await http.post(
                "/slack/commands", content=body, headers={"content-type": FORM, **slack_headers(body)}
            )
        await node.bus.start()
        seen = await _watch(node, "slack.command.#", "invoke.#")
        swept = await node.relay.sweep(older_than_seconds=0)

    assert ack.status_code == 200
    assert "Working on it: assistant" in ack.json()["text"]
    assert swept == 2
    by_topic = {event.topic: event for event in seen}
    assert set(by_topic) == {"slack.command.ask", "invoke.assistant"}
    announced = by_topic["slack.command.ask"].payload
    assert announced["execution_id"] == by_topic["invoke.assistant"].payload["execution_id"]
    assert (announced["text"], announced["agent"]) == ("still there?", "assistant")


async def test_a_routed_command_retried_while_the_cache_is_down_still_runs_once(
    tmp_path: Path, slack: FakeSlack
) -> None:
    """A routed command's retries are recognised by the run's idempotency key, in the
    database: the cache being down (which makes the cache-based check let requests through)
    does not run it twice."""
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    async with node_on(
        "memory", tmp_path, {"assistant.yml": AGENT}, script=_answer, **_settings(slack, redis_url=nobody)
    ) as node:
        body = command_body("/ask", "only once", response_url=slack.response_url("r1"))
        headers = {"content-type": FORM, **slack_headers(body)}
        async with _client(node) as http:
            first = await http.post("/slack/commands", content=body, headers=headers)
            retried = await http.post("/slack/commands", content=body, headers={**headers, "X-Slack-Retry-Num": "1"})
        await slack.wait_for(1, "/response/r1")
        executions = (await node.store.queries.list_executions(agent="assistant")).items

    assert (first.status_code, retried.status_code) == (200, 200)
    assert "Working on it" in first.json()["text"]
    assert "Already on it" in retried.json()["text"]
    assert len(executions) == 1


async def test_a_signed_interaction_shaped_otherwise_than_slacks_is_refused_not_half_read(
    tmp_path: Path, slack: FakeSlack
) -> None:
    """Every part the gateway reads as an object is checked at the edge: a signed payload
    whose `team`, `user` or actions are strings or lists answers 400, never a 500."""
    base = {"type": "block_actions", "user": {"id": "U7"}, "team": {"id": "T0001"}, "actions": []}
    shapes = [
        {**base, "team": "T0001"},
        {**base, "user": ["U7"]},
        {**base, "channel": 5},
        {**base, "container": "x"},
        {**base, "message": "hi"},
        {**base, "actions": {"action_id": "a"}},
        {**base, "actions": ["clarify:run1:c1"]},
        {**base, "actions": [{"action_id": "a", "selected_option": "yes"}]},
    ]
    async with node_on("memory", tmp_path, {"assistant.yml": AGENT}, script=_answer, **_settings(slack)) as node:
        seen = await _watch(node, "#")
        async with _client(node) as http:
            answers = [
                await _post(http, "/slack/interactions", urlencode({"payload": json.dumps(shape)}).encode())
                for shape in shapes
            ]
            fine = await _post(http, "/slack/interactions", urlencode({"payload": json.dumps(base)}).encode())

    assert [a.status_code for a in answers] == [400] * len(shapes), [a.text for a in answers]
    assert all(a.json()["error"]["code"] == "bad_request" for a in answers)
    assert fine.status_code == 200
    assert not [e for e in seen if e.topic.startswith(("clarification.", "slack.interaction."))]
