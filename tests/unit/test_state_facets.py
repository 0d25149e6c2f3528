"""The state store's facets (ports/state.py): every method in exactly one facet, a field of
`Stores` per facet, and cache decorators that implement their facet and nothing more (a
decorator that grows a forwarded method is the shape issue 21 took apart)."""

from __future__ import annotations

import dataclasses
import typing

from agentrunner.adapters.state.cached import CachedExecutions, CachedSessions
from agentrunner.adapters.state.stores import Stores
from agentrunner.ports.state import ExecutionStore, SessionStore, StateStore

LIFECYCLE = {"start", "close", "ping"}


def _methods(cls: type) -> set[str]:
    return {name for name, value in vars(cls).items() if callable(value) and not name.startswith("_")}


def _facets() -> list[type]:
    return [base for base in StateStore.__bases__ if base is not typing.Protocol]


def test_every_method_of_the_store_is_in_exactly_one_facet() -> None:
    seen: dict[str, str] = {}
    for facet in _facets():
        for name in _methods(facet):
            assert name not in seen, f"{name} is in {seen[name]} and {facet.__name__}"
            seen[name] = facet.__name__
    assert _methods(StateStore) == LIFECYCLE


def test_stores_has_a_field_for_every_facet() -> None:
    hints = typing.get_type_hints(Stores)
    fields = {field.name for field in dataclasses.fields(Stores)}
    typed = {hints[name] for name in fields}
    assert {facet for facet in _facets()} <= typed


def test_the_cache_decorators_implement_their_facet_and_nothing_more() -> None:
    assert _methods(CachedExecutions) == _methods(ExecutionStore)
    assert _methods(CachedSessions) == _methods(SessionStore)
