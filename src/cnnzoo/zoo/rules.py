"""How each row of docs/results.md was trained, read from its record: the epochs it ran
against those its config asks, the time budget that stopped it (`train.time_budget`,
from its config or the command), and the rule that rows trained with the same
`--set train.time_budget=S` share, stated once above the table.

Everything comes from the records (their `command`, `adapted`, and the `time_budget`,
`epochs_configured` and `precision` of newer ones) and the bundled configs, so that the
report says what happened without a config's name written here.
"""

from __future__ import annotations

import itertools
import shlex
from dataclasses import dataclass
from typing import Any

BUDGET_KEY = "train.time_budget"


@dataclass(frozen=True)
class Overrides:
    """What a recorded command changed: its environment and its `--set`s, in order."""

    env: tuple[str, ...]  # NAME=value words before the command (OMP_NUM_THREADS=2)
    sets: tuple[str, ...]  # the values of --set, key=value

    @staticmethod
    def of(command: str) -> Overrides:
        words = shlex.split(command)
        env = []
        for word in words:
            name, equals, _ = word.partition("=")
            if not equals or not name.isidentifier():
                break
            env.append(word)
        sets = [after for before, after in itertools.pairwise(words)
                if before == "--set"]
        return Overrides(tuple(env), tuple(sets))

    def value(self, key: str) -> str | None:
        """The last --set of `key` (the one that won), or None."""
        found = None
        for text in self.sets:
            name, _, raw = text.partition("=")
            if name.strip() == key:
                found = raw.strip()
        return found


def _number(raw: str | None) -> float | None:
    """A --set value as a number; None for null, ~ or anything else (no budget)."""
    try:
        return None if raw is None else float(raw)
    except ValueError:
        return None


def budget_text(seconds: float) -> str:
    """A budget in the round unit it was chosen in: 900 -> '15m', 5400 -> '1h30m',
    90 -> '90s'."""
    whole = round(seconds)
    if whole != seconds or whole < 120 or whole % 60:
        return f"{seconds:g}s"
    hours, minutes = divmod(whole // 60, 60)
    if not hours:
        return f"{minutes}m"
    return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"


@dataclass(frozen=True)
class EpochsRun:
    """A record's epochs: how many ran, how many were asked for, and what stopped it."""

    ran: float  # epochs the run took; a fraction where a budget stopped it mid-epoch
    asked: int | None  # the epochs its config asks for (the bundled config's)
    planned: int | None  # the epochs the run was set to, --set overrides included
    budget: float | None  # train.time_budget of the run, seconds

    @property
    def budget_stopped(self) -> bool:
        """The budget, not the epochs, ended the run: it ran fewer than it was set to."""
        return self.budget is not None and self.planned is not None and \
            self.ran < self.planned - 1e-9

    @property
    def cut_short(self) -> bool:
        """Fewer epochs than the config asks for, by a budget or by an override."""
        return self.budget_stopped or (self.asked is not None and self.ran < self.asked - 1e-9)

    def text(self) -> str | None:
        """'2.46 of 100 epochs (15m budget)' for a run a budget stopped, '1 of 100 epochs'
        for one set to fewer epochs than its config asks; None for a complete run."""
        if not self.cut_short:
            return None
        if self.budget_stopped and self.budget is not None:
            # The budget fitted the schedule of the epochs the run was set to.
            return f"{self.ran:g} of {self.planned} epochs ({budget_text(self.budget)} budget)"
        return f"{self.ran:g} of {self.asked} epochs"


def epochs_run(name: str, record: dict[str, Any]) -> EpochsRun | None:
    """What `record` (of the config `name`) ran against what was asked; None for a record
    that says nothing about its epochs."""
    from cnnzoo.config.bundled import bundled_configs
    from cnnzoo.config.experiment import load_config

    ran = record.get("epochs_run") or record.get("epochs")
    if ran is None:
        return None
    overrides = Overrides.of(record.get("command", ""))
    path = bundled_configs().get(name)
    train = load_config(path).train if path is not None else None
    asked = train.epochs if train is not None else record.get("epochs_configured")
    planned = record.get("epochs_configured") or _number(overrides.value("train.epochs")) or asked
    if "time_budget" in record:  # the run's own account (newer records)
        budget = record["time_budget"]
    elif overrides.value(BUDGET_KEY) is not None:
        budget = _number(overrides.value(BUDGET_KEY))
    else:
        budget = train.time_budget if train is not None else None
    return EpochsRun(float(ran), asked, None if planned is None else int(planned), budget)


def epochs_cell(name: str, record: dict[str, Any]) -> str:
    """The table's epochs: as the record says for a complete run, else how far it got
    and what stopped it."""
    run = epochs_run(name, record)
    text = run.text() if run is not None else None
    return text or str(record.get("epochs", "-"))


def _names(names: list[str]) -> str:
    quoted = [f"`{n}`" for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def _own_sets(record: dict[str, Any]) -> list[str]:
    """A record's --sets but its dataset adaptation and its budget: the choices a rule
    is made of."""
    adapted = set(record.get("adapted") or ())
    return [s for s in Overrides.of(record["command"]).sets
            if s not in adapted and s.partition("=")[0].strip() != BUDGET_KEY]


def _set_text(text: str, records: list[dict[str, Any]]) -> str:
    """`--set key=value`, and for the precision what the rows then trained in, where
    they all say the same."""
    done = {r.get("precision") for r in records}
    gloss = ""
    if text.partition("=")[0].strip() == "train.precision" and len(done) == 1 and None not in done:
        gloss = f" (they trained in {done.pop()})"
    return f"`--set {text}`{gloss}"


def rule_lines(records: dict[str, dict[str, Any]], order: list[str]) -> list[str]:
    """One legend bullet per time budget that several records were given on the command
    line (`--set train.time_budget=S`): the rows, the budget, the overrides they share and
    each row's own; none where no two rows share one."""
    groups: dict[float, list[str]] = {}
    for name in order:
        budget = _number(Overrides.of(records[name].get("command", "")).value(BUDGET_KEY))
        if budget is not None:
            groups.setdefault(budget, []).append(name)
    return [_rule_line(records, names, budget) for budget, names in groups.items()
            if len(names) > 1]


def _rule_line(records: dict[str, dict[str, Any]], names: list[str], budget: float) -> str:
    rows = [records[n] for n in names]
    own = {n: _own_sets(records[n]) for n in names}
    common = [s for s in dict.fromkeys(own[names[0]]) if all(s in own[n] for n in names)]
    envs = [Overrides.of(r["command"]).env for r in rows]
    env = [w for w in envs[0] if all(w in e for e in envs)]
    line = (f"- One rule for {_names(names)}: a {budget_text(budget)} time budget for the "
            f"training loop (`--set {BUDGET_KEY}={budget:g}`), each its own optimizer and "
            "schedule, fitted by the budget to the steps that fit")
    if common:
        line += "; " + ", ".join(_set_text(s, rows) for s in common)
    if env:
        line += f"; run with `{' '.join(env)}`"
    for name in names:
        extra = [s for s in own[name] if s not in common]
        if extra:
            line += f"; `{name}` also " + ", ".join(f"`--set {s}`" for s in extra)
    return line + "."
