"""What `agentrunner eval` writes: the JUnit XML that CI systems read, and the line that
says why a case failed. Pure: the runs are the JSON records of `GET /evals/runs/{id}`."""

from __future__ import annotations

import re
from typing import Any
from xml.etree import ElementTree  # written here, never parsed

MAX_MESSAGE_CHARS = 500
# What XML 1.0 cannot hold, not even escaped: a model's reason or answer may contain it.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: str) -> str:
    """`text` with the characters XML 1.0 cannot hold replaced by U+FFFD."""
    return _NOT_XML.sub("\ufffd", text)


def why_failed(case: dict[str, Any]) -> str:
    """The first reason a case failed (its error, a rule that did not hold, its judge)."""
    if case.get("error"):
        return str(case["error"])
    for rule in case.get("expectations") or []:
        if not rule.get("passed"):
            return f"{rule['kind']}: {rule.get('detail', '')}"
    judge = case.get("judge") or {}
    if judge.get("error"):
        return f"judge {judge.get('agent')}: {judge['error']}"
    if judge:
        return f"judge {judge.get('agent')} scored {judge.get('score')}: {judge.get('reason', '')}"
    return "failed"


def junit_xml(runs: list[dict[str, Any]]) -> str:
    """One `<testsuite>` per run, one `<testcase>` per case: a failed case is a `<failure>`,
    one whose execution could not run or end is an `<error>`."""
    root = ElementTree.Element("testsuites", name="agentrunner eval")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for run in runs:
        cases = run.get("cases") or []
        errors = [case for case in cases if _is_error(case)]
        failures = [case for case in cases if not case["passed"] and not _is_error(case)]
        suite = ElementTree.SubElement(
            root,
            "testsuite",
            name=run["suite"],
            tests=str(run["total_cases"]),
            failures=str(len(failures)),
            errors=str(len(errors) + (run["total_cases"] - len(cases))),
            time=_seconds(sum(case.get("latency_ms") or 0 for case in cases)),
            timestamp=str(run.get("created_at", "")),
        )
        properties = ElementTree.SubElement(suite, "properties")
        for name in ("run_id", "agent", "agent_version", "status", "threshold", "pass_rate", "baseline_run_id"):
            ElementTree.SubElement(properties, "property", name=name, value=str(run.get(name)))
        for case in cases:
            testcase = ElementTree.SubElement(
                suite,
                "testcase",
                classname=f"eval.{run['suite']}",
                name=case["case"],
                time=_seconds(case.get("latency_ms") or 0),
            )
            if not case["passed"]:
                reason = xml_text(why_failed(case))
                kind = "error" if _is_error(case) else "failure"
                element = ElementTree.SubElement(testcase, kind, message=reason[:MAX_MESSAGE_CHARS])
                element.text = reason
            out = ElementTree.SubElement(testcase, "system-out")
            out.text = xml_text(
                f"score={case['score']} cost_usd={case.get('cost_usd')} execution_id={case.get('execution_id')}"
            )
        totals["tests"] += run["total_cases"]
        totals["failures"] += len(failures)
        totals["errors"] += len(errors) + (run["total_cases"] - len(cases))
    for name, value in totals.items():
        root.set(name, str(value))
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _is_error(case: dict[str, Any]) -> bool:
    """A case that never got an answer to judge: refused, or its execution did not end."""
    return case.get("status") not in ("succeeded", "failed", "timed_out", "cancelled")


def _seconds(milliseconds: float) -> str:
    return f"{milliseconds / 1000:.3f}"
