"""What the demo shows: the pools, a live task board while it waits, and the final summary.

On a terminal the board is a Rich ``Live`` table with a progress bar; anywhere else (CI logs,
pipes) it prints one plain line per state change, so logs stay readable.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from cpnet.cli.output import state_text, table
from cpnet.cli.pools import hardware_summary, price_summary
from cpnet.demo.sites import DemoSite
from cpnet.demo.workload import DemoTask
from cpnet.registry.model import PoolRecord
from cpnet.tasks.model import TaskView
from cpnet.tasks.states import State

REFRESH_PER_S = 4
PLAIN_WIDTH = 120  # for logs: wide enough that identifiers do not wrap
QUIET_LINE_S = 10.0  # plain mode: a "still waiting" line after this long without news
MAX_SUMMARY_ROWS = 40  # a larger run lists only the tasks that failed or were meant to


def make_console() -> Console:
    """The demo's console: stdout, and wide when it is a log rather than a terminal."""
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PLAIN_WIDTH
    return console


# ---- small formatters -------------------------------------------------------------------------


def duration(view: TaskView | None, now: datetime | None = None) -> str:
    """How long the task's last attempt ran (so far, while it runs), e.g. ``1.4s``."""
    if view is None or not view.attempts:
        return "-"
    attempt = view.attempts[-1]
    if attempt.start_time is None:
        return "-"
    end = attempt.end_time or (None if view.state.terminal else now or datetime.now(UTC))
    if end is None:
        return "-"
    return f"{max(0.0, (end - attempt.start_time).total_seconds()):.1f}s"


def last_stderr(view: TaskView) -> str:
    """The last non-empty stderr line of the task's last attempt, if any."""
    if not view.attempts:
        return ""
    for log in reversed(view.attempts[-1].executor_logs):
        lines = [x for x in log.stderr.splitlines() if x.strip()]
        if lines:
            return lines[-1].strip()
    return ""


def region_text(pool: PoolRecord) -> str:
    return f"{pool.region.code} {pool.region.name}".strip()


# ---- the network as it appears --------------------------------------------------------------


def sites_table(sites: Sequence[DemoSite]) -> Table:
    """The providers and sites the demo creates, with their regions and coordinates."""
    grid = table(None, ["site", "provider", "type", "region", "code", "lat, lon"])
    for s in sites:
        grid.add_row(
            s.key,
            s.provider,
            s.type,
            f"{s.region_name} {s.name_zh}",
            s.region_code,
            f"{s.lat:.3f}, {s.lon:.3f}",
        )
    return grid


def pools_table(pools: Sequence[PoolRecord], labels: dict[str, str]) -> Table:
    """Live pools as discovery returns them: identifier, type, region, hardware, price."""
    grid = table(None, ["identifier (site/pool)", "type", "region", "hardware", "price/h"])
    for p in pools:
        grid.add_row(
            Text.assemble((p.id, "bold"), "\n", (labels.get(p.id, p.site_name), "dim")),
            p.type.value,
            region_text(p),
            hardware_summary(p),
            price_summary(p),
        )
    return grid


def declared_note(cores: int) -> Panel:
    """Why a laptop can run a pool of A800s: the capacity is declared, not measured."""
    return Panel(
        Text.assemble(
            ("Declared capacity. ", "bold"),
            "The cores, memory and the 8 × NVIDIA A800 GPUs above are what each site's operator "
            "declares in its agent config (sites/*/agent.toml); they are not present on this "
            f"machine ({cores} cores, no such GPUs). The scheduler places tasks by the declared "
            "capacity, so a task asking for 2 × A800 lands on the Ulanqab pool, but every task "
            "runs here as an ordinary CPU process.",
        ),
        border_style="yellow",
        expand=False,
    )


# ---- the live board ----------------------------------------------------------------------------


@dataclass
class Board:
    """The tasks while the demo waits: a live table and progress bar, or plain lines."""

    console: Console
    tasks: list[DemoTask]
    labels: dict[str, str]  # pool id -> "site/pool"
    views: dict[str, TaskView] = field(default_factory=dict)  # task id -> latest view
    events: list[str] = field(default_factory=list)
    _live: Live | None = None
    _progress: Progress | None = None
    _bar: int = 0
    _seen: dict[str, State] = field(default_factory=dict)
    _last_line: float = 0.0

    @property
    def live(self) -> bool:
        return self.console.is_terminal

    def __enter__(self) -> Board:
        self._last_line = time.monotonic()
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]tasks finished"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
            )
            self._bar = self._progress.add_task("tasks", total=len(self.tasks))
            self._live = Live(
                self._render(),
                console=self.console,
                refresh_per_second=REFRESH_PER_S,
                get_renderable=self._render,
            )
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def finished(self) -> int:
        return sum(1 for v in self.views.values() if v.state.terminal)

    def where(self, view: TaskView | None) -> str:
        if view is None or not view.pool_id:
            return "-"
        return self.labels.get(view.pool_id, view.pool_id)

    def note(self, message: str) -> None:
        """Something the demo did (e.g. a cancel): under the table, or as a plain line."""
        self.events.append(message)
        if not self.live:
            self.console.print(f"  … {message}", soft_wrap=True)

    def update(self, views: dict[str, TaskView]) -> None:
        """Take the latest views (task id -> view); redraw, or print what changed."""
        self.views.update(views)
        if self._progress is not None:
            self._progress.update(self._bar, completed=self.finished())
        if self.live:
            return
        total = len(self.tasks)
        for t in self.tasks:
            view = self.views.get(t.task_id)
            if view is None or self._seen.get(t.task_id) == view.state:
                continue
            self._seen[t.task_id] = view.state
            self._last_line = time.monotonic()
            done = sum(1 for state in self._seen.values() if state.terminal)
            extra = f"  {duration(view)}" if view.state.terminal else ""
            self.console.print(
                f"  [{done:>{len(str(total))}}/{total}] {t.name:<22} "
                f"{view.state.value:<15} {self.where(view)}{extra}",
                soft_wrap=True,
            )
        if time.monotonic() - self._last_line > QUIET_LINE_S:
            self._last_line = time.monotonic()
            running = sum(1 for v in self.views.values() if v.state is State.RUNNING)
            self.console.print(
                f"  … still waiting: {self.finished()}/{total} finished, {running} running"
            )

    def _rows(self) -> list[DemoTask]:
        """The tasks the live table has room for: unfinished ones first when not all fit."""
        room = max(5, self.console.size.height - 8)
        if len(self.tasks) <= room:
            return self.tasks

        def ended(t: DemoTask) -> bool:
            view = self.views.get(t.task_id)
            return view is not None and view.state.terminal

        return sorted(self.tasks, key=ended)[:room]  # stable: submission order within each

    def _render(self) -> Group:
        now = datetime.now(UTC)
        rows = self._rows()
        grid = table(None, ["task", "state", "where", "time", "what it shows"])
        # One line per task, so the table's height is known and fits the terminal: the last
        # column takes what width is left and is cut short, the others never wrap.
        widths = (
            max(len(t.name) for t in rows),
            len(State.EXECUTOR_ERROR.value),
            max((len(x) for x in self.labels.values()), default=4),
            6,
        )
        for column, width in zip(grid.columns, widths, strict=False):
            column.no_wrap, column.min_width = True, width
        last = grid.columns[-1]
        last.no_wrap, last.overflow = True, "ellipsis"
        # Each column costs its width plus 3 (padding and a rule).
        last.max_width = max(8, self.console.width - sum(w + 3 for w in widths) - 3)
        if len(rows) < len(self.tasks):
            grid.caption = f"{len(rows)} of {len(self.tasks)} tasks shown, unfinished first"
        for t in rows:
            view = self.views.get(t.task_id)
            grid.add_row(
                t.name,
                state_text(view.state if view else None),
                self.where(view),
                duration(view, now),
                Text(t.purpose, style="dim"),
            )
        parts: list[Table | Progress | Text] = [grid]
        parts += [Text(f"… {e}", style="dim") for e in self.events[-3:]]
        if self._progress is not None:
            parts.append(self._progress)  # type: ignore[arg-type]
        return Group(*parts)


# ---- the summary -------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One task's result as the summary shows it."""

    task: DemoTask
    view: TaskView | None
    problems: list[str]  # why it did not do what it should; empty when it did


def summary_tables(
    outcomes: Sequence[Outcome], pools: Sequence[PoolRecord], labels: dict[str, str]
) -> tuple[Table, Table]:
    """(tasks per pool, every task with its placement, duration and verdict)."""
    ran: dict[str, int] = {}
    for o in outcomes:
        if o.view is not None and o.view.pool_id:
            ran[o.view.pool_id] = ran.get(o.view.pool_id, 0) + 1
    per_pool = table(None, ["identifier", "site", "tasks"])
    for p in pools:
        per_pool.add_row(p.id, labels.get(p.id, p.site_name), str(ran.get(p.id, 0)))
    tasks = table(None, ["task", "expected", "final state", "where", "time", "check"])
    shown = list(outcomes)
    if len(shown) > MAX_SUMMARY_ROWS:  # a large run: the tasks worth reading, then a count
        shown = [o for o in outcomes if o.problems or o.task.expect is not State.COMPLETE]
        tasks.caption = (
            f"{len(outcomes) - len(shown)} more tasks completed as expected (not listed)"
        )
    for o in shown:
        view = o.view
        mark = Text("ok", style="green") if not o.problems else Text("FAIL", style="bold red")
        tasks.add_row(
            o.task.name,
            o.task.expect.value,
            state_text(view.state if view else None),
            labels.get(view.pool_id or "", view.pool_id or "-") if view else "-",
            duration(view),
            mark,
        )
    return per_pool, tasks


def failure_lines(outcomes: Sequence[Outcome]) -> list[Text]:
    """One line per task that failed, on purpose or not, with its reason and stderr."""
    lines = []
    for o in outcomes:
        view = o.view
        if view is None or view.state is State.COMPLETE:
            continue
        reason = view.reason or (view.attempts[-1].reason if view.attempts else None) or ""
        err = last_stderr(view)
        text = Text.assemble(f"  {o.task.name}: ", state_text(view.state))
        if reason:
            text.append(f" — {reason}")
        if err:
            text.append(f" — stderr: {err}", style="dim")
        text.append("  (expected)" if view.state is o.task.expect else "", style="green")
        lines.append(text)
    return lines


def explain_lines(name: str, data: dict, labels: dict[str, str]) -> list[Text]:
    """The scheduler's reasons for one task: the ranked pools and the ruled-out ones."""
    lines = [Text(f"Why {name} ran where it did (cpnet explain {data.get('task_id', '')}):")]
    for p in sorted(data.get("placements") or [], key=lambda p: p.get("rank", 0)):
        pool = labels.get(str(p.get("pool_id")), str(p.get("pool_id")))
        why = "; ".join(p.get("reasons") or [])
        lines.append(Text(f"  #{p.get('rank')} {pool}: {why}"))
    for r in data.get("rejections") or []:
        pool = labels.get(str(r.get("pool_id")), str(r.get("pool_id")))
        lines.append(Text(f"  ruled out {pool}: {'; '.join(r.get('reasons') or [])}", style="dim"))
    return lines
