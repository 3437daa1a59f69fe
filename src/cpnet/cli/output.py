"""How the CLI prints: Rich tables for people, plain JSON for scripts, one red line for errors."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from cpnet.auth.model import IssuedToken
from cpnet.tasks.states import State

# Rich looks up sys.stdout / sys.stderr at write time, so test runners that swap them still work.
console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)

# `--log-format` of the long-running commands (`cpnet hub`, `cpnet agent`): one option, one help.
LogFormatOption = Annotated[
    str | None,
    typer.Option(
        "--log-format",
        metavar="FORMAT",
        help="text, or json: one object per line with request, trace, task and attempt ids "
        "(default: CPNET_LOG_FORMAT, else text).",
    ),
]

STATE_STYLES: dict[State, str] = {
    State.QUEUED: "yellow",
    State.INITIALIZING: "cyan",
    State.RUNNING: "bold cyan",
    State.PAUSED: "magenta",
    State.COMPLETE: "bold green",
    State.EXECUTOR_ERROR: "bold red",
    State.SYSTEM_ERROR: "bold red",
    State.CANCELING: "magenta",
    State.CANCELED: "dim",
    State.PREEMPTED: "magenta",
}


def counting(label: str) -> Progress:
    """A progress bar on stderr counting items (``label``, bar, n/total, time), gone when done:
    stdout stays what scripts read."""
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
    )


def fail(message: str, hint: str = "", *, code: int = 1) -> NoReturn:
    """Print one red line (what went wrong, then what to do) on stderr and exit."""
    line = f"error: {message}"
    if hint and hint not in message:
        line += f" — {hint}"
    errors.print(Text(line, style="bold red"), soft_wrap=True)
    raise typer.Exit(code)


def plain(value: Any) -> Any:
    """JSON-ready data from models, lists of models and plain values."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout, untouched by Rich (safe to pipe into jq)."""
    typer.echo(json.dumps(plain(value), indent=2, ensure_ascii=False, default=str))


def state_text(state: State | str | None) -> Text:
    """A task state in its colour."""
    if state is None:
        return Text("-", style="dim")
    try:
        state = State(str(state))
    except ValueError:
        return Text(str(state))
    return Text(state.value, style=STATE_STYLES.get(state, ""))


def age(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago ``moment`` was, in its largest whole unit (``42s``, ``5m``, ``3h``, ``2d``)."""
    if moment is None:
        return "-"
    now = now or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def when(moment: datetime | None) -> str:
    """A timestamp for tables: local-free UTC, to the second."""
    if moment is None:
        return "-"
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def seconds(value: float | None) -> str:
    """A duration in seconds for tables (``45s``, ``12m``, ``3.5h``)."""
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.0f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.1f}h"


def number(value: float | None, digits: int = 2) -> str:
    """A figure for tables, trimmed of useless zeros."""
    if value is None:
        return "-"
    if float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.{digits}f}".rstrip("0").rstrip(".")


class PlainTable(Table):
    """A table whose string cells are shown as they are: data (a task's name, an error, a log
    line, ``[secret]``) is never read as Rich markup. Style a cell by passing a ``Text``."""

    def add_row(self, *renderables: Any, **kwargs: Any) -> None:
        super().add_row(*(Text(r) if isinstance(r, str) else r for r in renderables), **kwargs)


def table(title: str | None, columns: Iterable[str]) -> Table:
    """An empty table in the CLI's one style."""
    grid = PlainTable(title=title, title_justify="left", header_style="bold", show_edge=False)
    for i, column in enumerate(columns):
        # The first column holds ids, which get copied and pasted: other columns give way first.
        grid.add_column(column, overflow="fold", no_wrap=i == 0)
    return grid


def fields(pairs: Iterable[tuple[str, Any]]) -> Table:
    """A two-column key/value table for one object."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in pairs:
        grid.add_row(key, value if isinstance(value, Text) else Text(str(value)))
    return grid


def split_pairs(items: Iterable[str] | None, what: str) -> dict[str, str]:
    """``k=v`` strings from repeated flags as a dict; a usage error if one lacks ``=``."""
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not k=v", param_hint=what)
        out[key] = value
    return out


def show_records(
    records: Iterable[BaseModel],
    columns: list[str],
    row: Callable[[Any], list[Any]],
    json_key: str,
    json_out: bool,
) -> None:
    """Print a list of records as a table, or as ``{json_key: [...]}``."""
    records = list(records)
    if json_out:
        print_json({json_key: records})
        return
    grid = table(None, columns)
    for record in records:
        grid.add_row(*row(record))
    console.print(grid)
    if not records:
        errors.print(f"no {json_key}", style="dim")


def created(ident: str, sentence: str) -> None:
    """Print a new object's id alone on stdout (for `X=$(cpnet ...)`) and a sentence on stderr."""
    console.print(ident, soft_wrap=True)
    errors.print(sentence, style="dim")


def show_issued(issued: IssuedToken, what: str) -> None:
    """Print a freshly issued token with the warning that it is shown only once.

    On a terminal: a table. Piped: the token alone on stdout, so `T=$(cpnet admin site token ..)`
    captures just the secret.
    """
    if not console.is_terminal:
        console.print(issued.token, soft_wrap=True)
        errors.print(
            f"{what} {issued.id} ({issued.role.value}); stored only as a hash, shown only once",
            style="dim",
        )
        return
    console.print(
        fields(
            [
                ("token id", issued.id),
                ("role", issued.role.value),
                ("org", issued.org_id),
                ("for", issued.site_id or issued.user_id or "-"),
                ("token", Text(issued.token, style="bold")),
            ]
        )
    )
    errors.print(
        f"Store this {what} now: it is shown only once (the hub keeps only its hash).",
        style="bold yellow",
    )
