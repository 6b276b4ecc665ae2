"""How counts read in messages: ``plural(1, "step")`` is "1 step", ``plural(2, "step")`` "2 steps"."""

from __future__ import annotations

__all__ = ["plural"]


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"{n} {word}"``, the word in the plural (``many``, default ``word + "s"``) unless ``n`` is 1."""
    return f"{n} {word if n == 1 else (many or word + 's')}"
