"""`python supervised.py CONFIG`: the supervisor of `cluster up` (`run_cluster`) over the
roles CONFIG (a JSON file) names, for tests/integration/test_supervisor.py: {"roles":
[[role, command, health URL], ...], "state": path, "policy": RestartPolicy fields,
"liveness": LivenessPolicy fields, "drain": seconds}."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from agentrunner.liveness import LivenessPolicy
from agentrunner.supervisor import RestartPolicy, run_cluster

if __name__ == "__main__":
    config = json.loads(Path(sys.argv[1]).read_text())
    plan = [(role, command, url) for role, command, url in config["roles"]]
    policy = RestartPolicy(**config["policy"])
    liveness = LivenessPolicy(**config["liveness"])
    state = Path(config["state"])
    sys.exit(run_cluster(plan, state_path=state, policy=policy, liveness=liveness, drain=config["drain"]))
