"""Phases that must run in order: a clear error for one called too early (or twice
where it may run once), instead of an AttributeError on a field not yet set."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class Phases:
    """The phases of an `owner` ("Trainer"), each with the phase it needs done first."""

    def __init__(self, owner: str, needs: Mapping[str, str | None],
                 once: Sequence[str] = ()) -> None:
        self.owner = owner
        self.needs = needs
        self.once = once
        self.done: set[str] = set()

    def enter(self, phase: str) -> None:
        """`phase` starts: refuse it if the phase it needs has not run, or if it ran
        already and may run only once."""
        if phase in self.once and phase in self.done:
            raise RuntimeError(f"{self.owner}.{phase}() has already run for this "
                               f"{self.owner.lower()}")
        needed = self.needs[phase]
        if needed is not None and needed not in self.done:
            order = " -> ".join(f"{p}()" for p in self.needs)
            raise RuntimeError(
                f"{self.owner}.{phase}() needs {self.owner}.{needed}() first: the phases "
                f"run in the order {order}, or all at once with {self.owner}.run()")
        self.done.add(phase)
