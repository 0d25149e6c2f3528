"""An independent topic matcher and topic/pattern strategies, to check the product's
routing (domain.topics and every EventBus adapter) against."""

from __future__ import annotations

from hypothesis import strategies as st

WORDS = st.sampled_from(["a", "b", "c"])
TOPICS = st.lists(WORDS, min_size=1, max_size=7).map(".".join)
PATTERNS = st.lists(st.one_of(WORDS, st.sampled_from(["*", "#"])), min_size=1, max_size=6).map(".".join)


def reference_matches(pattern: str, topic: str) -> bool:
    """Dynamic programming over words: done[i][j] is True when the first i pattern words
    match the first j topic words."""
    words, parts = pattern.split("."), topic.split(".")
    done = [[False] * (len(parts) + 1) for _ in range(len(words) + 1)]
    done[0][0] = True
    for i, word in enumerate(words, start=1):
        for j in range(len(parts) + 1):
            if word == "#":
                # '#' covers nothing (row above) or one more word (column to the left).
                done[i][j] = done[i - 1][j] or (j > 0 and done[i][j - 1])
            elif j > 0:
                done[i][j] = done[i - 1][j - 1] and word in ("*", parts[j - 1])
    return done[-1][-1]
