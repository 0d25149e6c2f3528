"""The cached store's state keys name one session of one tenant: no two (tenant, agent,
session) share a key, whatever the names (issue 19: no cache entry across tenants)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agentrunner.adapters.state.cached import state_key

names = st.text(alphabet=st.sampled_from("ab:-0"), max_size=6)


@given(first=st.tuples(st.none() | names, names, names), second=st.tuples(st.none() | names, names, names))
def test_two_sessions_never_share_a_cache_key(
    first: tuple[str | None, str, str], second: tuple[str | None, str, str]
) -> None:
    def key(tenant: str | None, agent: str, session: str) -> str:
        return state_key(agent, session, tenant)

    # None is the implicit tenant of auth off, stored as "".
    same = (first[0] or "", *first[1:]) == (second[0] or "", *second[1:])
    assert (key(*first) == key(*second)) == same


def test_the_same_session_of_two_tenants_has_two_keys() -> None:
    assert state_key("chat", "s1", "team-a") != state_key("chat", "s1", "team-b")
