"""`GET /queues` as an attacker sees it (issue 26, item 4): it counts every tenant's work,
so only an admin reads it. Without a key or with a wrong one it answers 401; with a
tenant's key 403 `admin_only`, whatever the tenant sends with it (another tenant's name,
an oversized query, another method), and no figure in any refusal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.integration.conftest import node_on
from tests.security.conftest import ADMIN_KEY, TEAM_A_KEY, TEAM_B_KEY

WORKER = "name: worker\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"
AUTH: dict[str, Any] = {
    "enable_api_auth": True,
    "api_keys": f"team-a:{TEAM_A_KEY},team-b:{TEAM_B_KEY}",
    "admin_api_keys": f"ops:{ADMIN_KEY}",
}


async def test_only_an_admin_reads_the_queues(tmp_path: Path) -> None:
    async with node_on("memory", tmp_path, {"worker.yml": WORKER}, **AUTH) as node:
        app = node.apps()["orchestrator"]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node") as http:
            anonymous = await http.get("/queues")
            wrong = await http.get("/queues", headers={"X-API-Key": "x" * 40})
            tenants = [
                await http.get("/queues", headers={"X-API-Key": key}, params=params)
                for key in (TEAM_A_KEY, TEAM_B_KEY)
                for params in ({}, {"tenant": "team-b"}, {"agent": "worker"}, {"pad": "x" * 6000})
            ]
            bearer = await http.get("/queues", headers={"Authorization": f"Bearer {TEAM_A_KEY}"})
            written = await http.post("/queues", headers={"X-API-Key": TEAM_A_KEY}, json={"pools": []})
            admin = await http.get("/queues", headers={"X-API-Key": ADMIN_KEY})

    assert anonymous.status_code == wrong.status_code == 401
    for refused in [*tenants, bearer]:
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "admin_only"
        assert "pools" not in refused.text
        assert "worker" not in refused.text
    assert written.status_code == 405
    assert admin.status_code == 200
    assert [agent["agent"] for pool in admin.json()["pools"] for agent in pool["agents"]] == ["worker"]
