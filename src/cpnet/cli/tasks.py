"""Following tasks: `cpnet tasks`, `status`, `logs`, `cancel` and `explain`."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.text import Text

from cpnet.cli.config import connect
from cpnet.cli.output import (
    age,
    console,
    errors,
    fail,
    fields,
    number,
    print_json,
    seconds,
    split_pairs,
    state_text,
    table,
    when,
)
from cpnet.client import Client
from cpnet.tasks.model import AttemptProgress, AttemptView, TaskEvent, TaskView
from cpnet.tasks.states import State

TaskId = Annotated[str, typer.Argument(metavar="ID", help="The task's id.", show_default=False)]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
WATCH_INTERVAL_S = 1.0
LAST_EVENTS = 10
MAX_TRANSFER_ROWS = 50  # of the transfers table in `cpnet status` (--json has them all)
PHASE_ITEMS = {"staging_in": "inputs", "running": "executors done", "staging_out": "outputs"}


def size_text(n: int | None) -> str:
    """A byte count for people: 512 B, 45.0 MiB, 1.20 GiB."""
    if n is None:
        return "?"
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.{2 if unit == 'GiB' else 1}f} {unit}"
    return f"{n} B"


def progress_text(p: AttemptProgress | None) -> str:
    """One line on how far an attempt got, e.g. "staging in 3/10 inputs, 45.0 MiB; now
    data/big.bin: 12.0 MiB of 100.0 MiB"."""
    if p is None:
        return ""
    phase = p.phase.replace("_", " ")
    text = f"{phase} {p.items_done}/{p.items_total} {PHASE_ITEMS[p.phase]}"
    if p.phase == "running":
        return text
    text += f", {size_text(p.bytes_done)}"
    if p.path:
        of = "" if p.file_total is None else f" of {size_text(p.file_total)}"
        text += f"; now {p.path}: {size_text(p.file_bytes)}{of}"
    return text


def transfers_table(attempts: list[AttemptView]) -> Any:
    """The inputs and outputs each attempt moved (the first MAX_TRANSFER_ROWS), or None."""
    rows = [(a, t) for a in attempts for t in a.transfers or []]
    omitted = sum(a.transfers_omitted or 0 for a in attempts)
    if not rows and not omitted:
        return None
    grid = table("transfers", ["#", "dir", "path", "url", "bytes", "time", "sha256"])
    for a, t in rows[:MAX_TRANSFER_ROWS]:
        sha = "-" if not t.sha256 else t.sha256[:12] + ("… verified" if t.sha256_verified else "…")
        grid.add_row(
            str(a.attempt),
            t.direction,
            t.path,
            t.url,
            size_text(t.size_bytes),
            f"{t.seconds:.2f}s" if t.seconds < 120 else seconds(t.seconds),
            sha,
        )
    more = max(0, len(rows) - MAX_TRANSFER_ROWS) + omitted
    if more > 0:
        grid.caption = f"{more} more not shown" + (
            f" ({omitted} over the hub's per-attempt limit, not kept)" if omitted else ""
        )
    return grid


def list_tasks(
    ctx: typer.Context,
    states: Annotated[
        list[State] | None,
        typer.Option("--state", "-s", case_sensitive=False, help="Only these states (repeatable)."),
    ] = None,
    name_prefix: Annotated[
        str | None, typer.Option("--name-prefix", metavar="P", help="Only names starting so.")
    ] = None,
    tags: Annotated[
        list[str] | None, typer.Option("--tag", metavar="K=V", help="Only with this tag.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most N tasks.")] = 50,
    everything: Annotated[
        bool, typer.Option("--all", help="Every matching task, page after page.")
    ] = False,
    json_out: JsonOut = False,
) -> None:
    """List your tasks, newest first.

    **Example:** `cpnet tasks --state RUNNING --state QUEUED --tag team=nlp`
    """
    filters: dict[str, Any] = {
        "state": states,
        "name_prefix": name_prefix,
        "tags": split_pairs(tags, "--tag"),
    }
    with connect(ctx) as hub:
        if everything:
            views, more = list(hub.iter_tasks(**filters, page_size=1000)), None
        else:
            page = hub.tasks(**filters, limit=limit)
            views, more = page.tasks, page.next_cursor
    if json_out:
        print_json({"tasks": views, "next_cursor": more})
        return
    grid = table(None, ["id", "name", "state", "pool", "attempts", "age"])
    for view in views:
        grid.add_row(
            view.id,
            view.name or "",
            state_text(view.state),
            view.pool_id or "-",
            str(len(view.attempts)),
            age(view.created_at),
        )
    console.print(grid)
    if not views:
        errors.print("no tasks match", style="dim")
    elif more:
        errors.print(f"showing the newest {len(views)}; use --all or --limit for more", style="dim")


def render_status(view: TaskView, events: list[TaskEvent]) -> Group:
    """The status screen of one task: its fields, its attempts, its last events."""
    parts: list[Any] = [
        fields(
            [
                ("task", view.id),
                ("name", view.name or "-"),
                ("state", state_text(view.state)),
                ("reason", view.reason or "-"),
                ("pool", view.pool_id or "-"),
                ("created", f"{when(view.created_at)} ({age(view.created_at)} ago)"),
                ("updated", f"{when(view.updated_at)} ({age(view.updated_at)} ago)"),
            ]
        )
    ]
    if view.attempts:
        grid = table(
            "attempts", ["#", "pool", "state", "started", "ended", "exit", "progress", "reason"]
        )
        for a in view.attempts:
            codes = ",".join(
                "-" if e.exit_code is None else str(e.exit_code) for e in a.executor_logs
            )
            grid.add_row(
                str(a.attempt),
                a.pool_id,
                state_text(a.state),
                when(a.start_time),
                when(a.end_time),
                codes or "-",
                progress_text(a.progress),
                a.reason or "",
            )
        parts += [Text(), grid]
        moved = transfers_table(view.attempts)
        if moved is not None:
            parts += [Text(), moved]
    if events:
        grid = table("last events", ["at", "change", "attempt", "reason"])
        for e in events[-LAST_EVENTS:]:
            if e.from_state == e.to_state:  # an event within a state, e.g. a placement
                change = Text.assemble(state_text(e.to_state), Text(" (stays)", style="dim"))
            else:
                change = Text.assemble(
                    state_text(e.from_state) if e.from_state else Text("∅", style="dim"),
                    " → ",
                    state_text(e.to_state),
                )
            grid.add_row(
                when(e.at), change, "-" if e.attempt is None else str(e.attempt), e.reason or ""
            )
        parts += [Text(), grid]
    return Group(*parts)


def status(
    ctx: typer.Context,
    task_id: TaskId,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Refresh until the task ends.")
    ] = False,
    json_out: JsonOut = False,
) -> None:
    """Show a task's state, pool, attempts (with staging progress while they run), the files
    they moved, and last events.

    With `--json`, prints `{"task": …, "events": […]}` (after the task ends, with `--watch`);
    each attempt has `progress` while it runs and `transfers` (every input and output moved:
    bytes, seconds, sha256 and whether it was verified) once it moved something.

    **Example:** `cpnet status tsk_1ent4tf7cxvq5ybv --watch`
    """
    with connect(ctx) as hub:
        if watch and json_out:
            hub.wait(task_id)
        if watch and not json_out:
            watch_status(hub, task_id)
            return
        view, events = hub.task(task_id, full=True), hub.events(task_id)
    if json_out:
        print_json({"task": view, "events": events})
    else:
        console.print(render_status(view, events))


def watch_status(hub: Client, task_id: str) -> None:
    """Redraw a task's status in place until it reaches a terminal state."""
    view, events = hub.task(task_id, full=True), hub.events(task_id)
    with Live(render_status(view, events), console=console, auto_refresh=False) as live:
        while not view.state.terminal:
            time.sleep(WATCH_INTERVAL_S)
            view, events = hub.task(task_id, full=True), hub.events(task_id)
            live.update(render_status(view, events), refresh=True)
    if not console.is_terminal:
        console.print()  # Live leaves the last line open when it cannot redraw in place


def logs(
    ctx: typer.Context,
    task_id: TaskId,
    attempt: Annotated[
        int | None,
        typer.Option("--attempt", "-a", metavar="N", help="Which attempt (default: last)."),
    ] = None,
    stderr: Annotated[
        bool, typer.Option("--stderr", help="Show the executors' stderr instead of stdout.")
    ] = False,
    json_out: JsonOut = False,
) -> None:
    """Print the stdout (or stderr) tails of a task's executors, one attempt at a time.

    The log text goes to stdout and the headers to stderr, so `> out.txt` keeps only the log.

    **Example:** `cpnet logs tsk_1ent4tf7cxvq5ybv --attempt 2 --stderr`
    """
    with connect(ctx) as hub:
        data = hub.logs(task_id)
    if json_out:
        print_json(data)
        return
    attempts = data.get("attempts") or []
    if not attempts:
        errors.print(f"task {task_id} has not started an attempt yet", style="dim")
        return
    if attempt is None:
        chosen = attempts[-1]
    else:
        matching = [a for a in attempts if a.get("attempt") == attempt]
        if not matching:
            known = ", ".join(str(a.get("attempt")) for a in attempts)
            fail(f"task {task_id} has no attempt {attempt}", f"its attempts are {known}")
        chosen = matching[0]
    stream = "stderr" if stderr else "stdout"
    for index, executor in enumerate(chosen.get("executor_logs") or []):
        code = executor.get("exit_code")
        errors.rule(
            f"attempt {chosen.get('attempt')} · executor {index} · {stream} · "
            f"exit {'-' if code is None else code} · pool {chosen.get('pool_id', '-')}",
            style="dim",
        )
        text = executor.get(stream) or ""
        typer.echo(text, nl=not text.endswith("\n"))
    for line in chosen.get("system_logs") or []:
        errors.print(Text(f"system: {line}", style="dim"), soft_wrap=True)


def cancel(ctx: typer.Context, task_id: TaskId, json_out: JsonOut = False) -> None:
    """Cancel a task (it moves to CANCELING while its site stops it, then CANCELED).

    **Example:** `cpnet cancel tsk_1ent4tf7cxvq5ybv`
    """
    with connect(ctx) as hub:
        view = hub.cancel(task_id)
    if json_out:
        print_json(view)
    else:
        console.print(Text.assemble(f"{view.id}: ", state_text(view.state)))


def _runtime(value: float | None) -> str:
    """A predicted run time, or "-" when the task states no work in SCU-hours."""
    return "-" if value is None else f"~{seconds(value)}"


def explain(ctx: typer.Context, task_id: TaskId, json_out: JsonOut = False) -> None:
    """Show why a task went where it did: the ranked pools, and why others were ruled out.

    **Example:** `cpnet explain tsk_1ent4tf7cxvq5ybv`
    """
    with connect(ctx) as hub:
        data = hub.explain(task_id)
    if json_out:
        print_json(data)
        return
    chosen = data.get("chosen_pool") or "none yet"
    console.print(
        Text.assemble(
            f"task {data.get('task_id', task_id)} ",
            state_text(data.get("state")),
            f" → {chosen} (objective: {data.get('objective', 'balanced')})",
        )
    )
    placements = data.get("placements") or []
    grid = table(
        "ranking",
        [
            "rank",
            "pool",
            "fits now",
            "time to result",
            "staging",
            "wait",
            "run time",
            "price/h",
            "est. cost",
            "reasons",
        ],
    )
    for p in sorted(placements, key=lambda p: p.get("rank", 0)):
        fits = Text("yes", style="green") if p.get("fits_now") else Text("no", style="yellow")
        pool = Text(str(p.get("pool_id")), style="bold" if p.get("pool_id") == chosen else "")
        grid.add_row(
            str(p.get("rank", "-")),
            pool,
            fits,
            seconds(p.get("time_to_result_s")),
            seconds(p.get("staging_s")),
            seconds(p.get("expected_start_s")),
            _runtime(p.get("predicted_runtime_s")),
            number(p.get("hourly_price"), 4),
            number(p.get("estimated_cost"), 4),
            "; ".join(p.get("reasons") or []),
        )
    console.print(grid if placements else Text("no feasible pool", style="yellow"))
    work = data.get("work")
    predicted = data.get("predicted_runtime_s") or {}
    if work and predicted:
        grid = table(
            f"predicted run time ({number(work.get('scu_hours'), 4)} SCU-h, {work.get('profile')})",
            ["pool", "run time"],
        )
        for pool_id, value in sorted(predicted.items()):
            grid.add_row(pool_id, "unknown (no SCU rate)" if value is None else seconds(value))
        console.print(Text(), grid)
    rejections = data.get("rejections") or []
    if rejections:
        grid = table("ruled out", ["pool", "reasons"])
        for r in rejections:
            grid.add_row(str(r.get("pool_id")), "; ".join(r.get("reasons") or []))
        console.print(Text(), grid)
