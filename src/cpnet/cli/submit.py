"""`cpnet submit`: a task from a JSON/TOML spec file, or from a command line and a few flags."""

from __future__ import annotations

import json
import sys
import time
import tomllib
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from cpnet.cli.config import connect
from cpnet.cli.data import read_key
from cpnet.cli.output import counting, errors, fail, print_json, split_pairs, state_text
from cpnet.tasks.model import BatchItem, TaskSpec, TaskView
from cpnet.tasks.states import State

MAX_ARRAY = 100_000  # tasks one --array makes (sent in batches of 1000)

SPEC_SUFFIXES = (".json", ".toml")
RESOURCES = "Resources and placement"


def is_spec_file(args: list[str]) -> bool:
    """Whether the positional arguments name a spec file rather than a command to run.

    One argument that is ``-`` or ends in .json/.toml is a spec file; anything else is a command
    (run a script literally called ``x.json`` with ``-- sh x.json``).
    """
    return len(args) == 1 and (args[0] == "-" or args[0].lower().endswith(SPEC_SUFFIXES))


def read_spec_file(source: str) -> dict[str, Any]:
    """A task spec as a dict from a JSON or TOML file, or JSON on stdin for ``-``."""
    try:
        if source == "-":
            data = json.loads(sys.stdin.read())
        elif source.lower().endswith(".toml"):
            data = tomllib.loads(Path(source).read_text())
        else:
            data = json.loads(Path(source).read_text())
    except FileNotFoundError:
        fail(f"no such spec file: {source}", "check the path (specs are .json or .toml)")
    except (OSError, ValueError) as err:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        fail(f"cannot read spec {source}: {err}", "fix the file and submit again")
    if not isinstance(data, dict):
        fail(f"spec {source} is not an object", "a spec is a JSON/TOML table with 'executors'")
    return data


def build_spec(
    command: list[str] | None = None,
    base: dict[str, Any] | None = None,
    *,
    name: str | None = None,
    cpus: float | None = None,
    memory_gb: float | None = None,
    gpus: int | None = None,
    gpu_model: str | None = None,
    regions: list[str] | None = None,
    pool_types: list[str] | None = None,
    labels: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    image: str | None = None,
    max_attempts: int | None = None,
    runtime_s: float | None = None,
    idempotency_key: str | None = None,
    quote_id: str | None = None,
    quote_option: int | None = None,
    keep_work_dir: bool | None = None,
    data_key: str | None = None,
) -> TaskSpec:
    """The TaskSpec for a command (or a spec file's dict), with flags laid on top of it."""
    spec: dict[str, Any] = json.loads(json.dumps(base)) if base else {}
    if command:
        executor: dict[str, Any] = {"command": list(command)}
        if env:
            executor["env"] = env
        if image:
            executor["image"] = image
        spec["executors"] = [executor]
    elif env or image:
        for executor in spec.get("executors", []):
            if env:
                executor["env"] = {**executor.get("env", {}), **env}
            if image:
                executor["image"] = image
    resources = spec.setdefault("resources", {})
    for key, value in (
        ("cpu_cores", cpus),
        ("ram_gb", memory_gb),
        ("gpus", gpus),
        ("gpu_model", gpu_model),
    ):
        if value is not None:
            resources[key] = value
    constraints = spec.setdefault("constraints", {})
    if regions:
        constraints["regions"] = list(regions)
    if pool_types:
        constraints["pool_types"] = list(pool_types)
    if labels:
        constraints["labels"] = {**constraints.get("labels", {}), **labels}
    if tags:
        spec["tags"] = {**spec.get("tags", {}), **tags}
    for key, value in (
        ("name", name),
        ("max_attempts", max_attempts),
        ("expected_runtime_s", runtime_s),
        ("idempotency_key", idempotency_key),
        ("quote_id", quote_id),
        ("quote_option", quote_option),
        ("keep_work_dir", keep_work_dir),
        ("data_key", data_key),
    ):
        if value is not None:
            spec[key] = value
    if not spec.get("executors"):
        fail("nothing to run", "give a spec file, or a command after `--`: cpnet submit -- echo hi")
    try:
        return TaskSpec.model_validate(spec)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        fail(f"invalid task spec: {where}: {first['msg']}", "fix it and submit again")


def submit(
    ctx: typer.Context,
    args: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="FILE | -- CMD ARGS...",
            help="A spec file (.json/.toml, `-` for JSON on stdin), or a command after `--`.",
            show_default=False,
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Task name.")] = None,
    cpus: Annotated[
        float | None, typer.Option("--cpus", metavar="C", rich_help_panel=RESOURCES)
    ] = None,
    memory_gb: Annotated[
        float | None, typer.Option("--memory-gb", metavar="G", rich_help_panel=RESOURCES)
    ] = None,
    gpus: Annotated[
        int | None, typer.Option("--gpus", metavar="N", min=0, rich_help_panel=RESOURCES)
    ] = None,
    gpu_model: Annotated[
        str | None, typer.Option("--gpu-model", metavar="M", rich_help_panel=RESOURCES)
    ] = None,
    regions: Annotated[
        list[str] | None,
        typer.Option(
            "--region", metavar="R", rich_help_panel=RESOURCES, help="Allowed region (repeatable)."
        ),
    ] = None,
    pool_types: Annotated[
        list[str] | None,
        typer.Option(
            "--pool-type",
            metavar="T",
            rich_help_panel=RESOURCES,
            help="general | intelligent | supercomputing | edge (repeatable).",
        ),
    ] = None,
    labels: Annotated[
        list[str] | None,
        typer.Option(
            "--label", metavar="K=V", rich_help_panel=RESOURCES, help="Required pool label."
        ),
    ] = None,
    tags: Annotated[
        list[str] | None, typer.Option("--tag", metavar="K=V", help="Tag (repeatable).")
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", "-e", metavar="K=V", help="Environment variable (repeatable)."),
    ] = None,
    image: Annotated[
        str | None, typer.Option("--image", help="Container image, where pools run images.")
    ] = None,
    max_attempts: Annotated[
        int | None, typer.Option("--max-attempts", min=1, max=10, help="Tries before giving up.")
    ] = None,
    runtime_s: Annotated[
        float | None,
        typer.Option("--runtime", metavar="S", help="Expected run time in seconds (for placing)."),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            metavar="KEY",
            help="Submitting twice with one key creates one task (default: a fresh key).",
        ),
    ] = None,
    quote_id: Annotated[
        str | None,
        typer.Option(
            "--quote",
            metavar="ID",
            help="A quote for this spec (`cpnet quote FILE`): run on its option's pool, charged "
            "at most its max charge.",
        ),
    ] = None,
    quote_option: Annotated[
        int | None,
        typer.Option("--option", metavar="N", min=1, help="Which option of --quote (default 1)."),
    ] = None,
    keep_work_dir: Annotated[
        bool,
        typer.Option(
            "--keep-work-dir",
            help="Leave the attempt's files on the provider after it ends, for debugging "
            "(default: the agent removes them).",
        ),
    ] = False,
    data_key_file: Annotated[
        Path | None,
        typer.Option(
            "--data-key",
            metavar="FILE",
            help="The task's data key (`cpnet data key`): inputs marked encrypted are decrypted "
            "on arrival, outputs leave encrypted (`cpnet data decrypt`).",
        ),
    ] = None,
    array: Annotated[
        int | None,
        typer.Option(
            "--array",
            metavar="N",
            min=1,
            max=MAX_ARRAY,
            help="N tasks of this spec, each with CPNET_ARRAY_INDEX (0..N-1) and CPNET_ARRAY_SIZE "
            "in its executors' env, named NAME-INDEX; sent in batches.",
        ),
    ] = None,
    tasks_file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            metavar="TASKS.jsonl",
            help="Submit every task of a JSON-lines file (one TaskSpec per line), in batches.",
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            "-w",
            help="Wait for the task (every task of --array) to end; exit 0 only if COMPLETE.",
        ),
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", metavar="S", help="Give up waiting after S seconds."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the task as JSON.")] = False,
) -> None:
    """Submit a task: a spec file, or a command after `--` with resources from flags.

    Prints the task id (so `ID=$(cpnet submit -- …)` works). With `--wait`, follows the task
    and exits 0 only if it ends COMPLETE.

    **Example:** `cpnet submit --cpus 2 --memory-gb 4 --region 44 --tag team=nlp --wait --
    python train.py --epochs 3`

    **Example:** `cpnet submit job.toml --name nightly`

    **Example:** `cpnet submit job.json --quote quo_5k2x… --option 2` (after `cpnet quote job.json`)

    **Example:** `cpnet submit --array 100 --cpus 1 -- python sweep.py` (each task reads
    `$CPNET_ARRAY_INDEX`); `cpnet submit --file tasks.jsonl`
    """
    args = list(args or [])
    if tasks_file is not None:
        if args or array:
            fail("--file takes every task from the file", "drop the command, spec file or --array")
        if wait:
            fail("--wait follows one task", "follow the batch with `cpnet tasks`")
        items, lines = read_jsonl(tasks_file)
        submit_batch(ctx, items, [f"line {n}" for n in lines], json_out)
        return
    base = read_spec_file(args[0]) if is_spec_file(args) else None
    spec = build_spec(
        None if base is not None else args,
        base,
        name=name,
        cpus=cpus,
        memory_gb=memory_gb,
        gpus=gpus,
        gpu_model=gpu_model,
        regions=regions,
        pool_types=pool_types,
        labels=split_pairs(labels, "--label"),
        tags=split_pairs(tags, "--tag"),
        env=split_pairs(env, "--env"),
        image=image,
        max_attempts=max_attempts,
        runtime_s=runtime_s,
        idempotency_key=idempotency_key,
        quote_id=quote_id,
        quote_option=quote_option,
        keep_work_dir=keep_work_dir or None,
        data_key=read_key(data_key_file) if data_key_file is not None else None,
    )
    if array is not None:
        items = array_items(spec, array)
        # With --wait --json, one JSON document at the end: the submission and how it ended.
        results = submit_batch(
            ctx, items, [f"index {i}" for i in range(array)], json_out, print_json_now=not wait
        )
        if wait:
            ids = [r.id for r in results if r.id is not None]
            submitted = batch_summary(results) if json_out else None
            follow_array(ctx, items[0]["tags"]["cpnet.array_id"], ids, timeout, json_out, submitted)
        return
    with connect(ctx) as hub:
        view = hub.submit(spec)
        if not wait:
            if json_out:
                print_json(view)
            else:
                typer.echo(view.id)
            return
        if not json_out:
            typer.echo(view.id)
        view = follow(hub, view, timeout)
    if json_out:
        print_json(view)
    if view.state is not State.COMPLETE:
        why = f": {view.reason}" if view.reason else ""
        fail(f"task {view.id} ended {view.state.value}{why}", f"see `cpnet logs {view.id}`")
    if not json_out:
        errors.print(state_text(view.state))


def array_items(spec: TaskSpec, n: int) -> list[dict[str, Any]]:
    """`n` copies of `spec`: each executor's env gets CPNET_ARRAY_INDEX and CPNET_ARRAY_SIZE,
    the name a ``-INDEX`` suffix, the tags ``cpnet.array_id`` (one per array) and
    ``cpnet.array_index``, an idempotency key its ``-INDEX``."""
    base = spec.model_dump(mode="json", exclude_none=True)
    array_id = uuid.uuid4().hex[:12]
    out = []
    for i in range(n):
        item = json.loads(json.dumps(base))
        for ex in item["executors"]:
            ex["env"] = {
                **ex.get("env", {}),
                "CPNET_ARRAY_INDEX": str(i),
                "CPNET_ARRAY_SIZE": str(n),
            }
        if spec.name:
            item["name"] = f"{spec.name}-{i}"
        item["tags"] = {**item.get("tags", {}), "cpnet.array_id": array_id}
        item["tags"]["cpnet.array_index"] = str(i)
        if spec.idempotency_key:
            item["idempotency_key"] = f"{spec.idempotency_key}-{i}"
        out.append(item)
    return out


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The task specs of a JSON-lines file and their line numbers (blank lines skipped); the
    CLI's error naming the line otherwise."""
    items: list[dict[str, Any]] = []
    lines: list[int] = []
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as err:
        fail(f"cannot read {path}: {err.strerror or err}", "check the path")
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as err:
            fail(f"{path} line {n} is not JSON: {err}", "one TaskSpec JSON object per line")
        if not isinstance(item, dict):
            fail(f"{path} line {n} is not a JSON object", "one TaskSpec JSON object per line")
        items.append(item)
        lines.append(n)
    if not items:
        fail(f"{path} has no tasks", "one TaskSpec JSON object per line")
    return items, lines


def submit_batch(
    ctx: typer.Context,
    items: list[dict[str, Any]],
    where: list[str],
    json_out: bool,
    *,
    print_json_now: bool = True,
) -> list[BatchItem]:
    """Send `items` in batches with a progress bar (stderr); print the new tasks' ids (or, with
    `--json`, every result: unless ``print_json_now`` is false, when the caller prints them in
    its own document); exit 1 naming each refused item (the others were created)."""
    with (
        connect(ctx) as hub,
        counting("submitting") as bar,
    ):
        job = bar.add_task("submit", total=len(items))
        results = hub.submit_many(items, on_chunk=lambda k: bar.advance(job, k))
    refused = [r for r in results if r.error is not None]
    created = sum(r.status == 201 for r in results)
    existing = sum(r.status == 200 for r in results)
    if json_out:
        if print_json_now or refused:
            print_json(batch_summary(results))
    else:
        for r in results:
            if r.id is not None:
                typer.echo(r.id)
        errors.print(f"{created} created, {existing} already there, {len(refused)} refused")
        for r in refused[:50]:
            assert r.error is not None
            errors.print(f"  {where[r.index]}: {r.status} {r.error.message}", markup=False)
        if len(refused) > 50:
            errors.print(f"  … and {len(refused) - 50} more (see --json)")
    if refused:
        fail(
            f"{len(refused)} of {len(items)} tasks refused",
            "fix them and submit those again; the others were created",
        )
    return results


def batch_summary(results: list[BatchItem]) -> dict[str, Any]:
    """What `--json` prints for a batch: every item's result and the counts."""
    return {
        "results": [r.model_dump(mode="json", exclude_none=True) for r in results],
        "created": sum(r.status == 201 for r in results),
        "existing": sum(r.status == 200 for r in results),
        "failed": sum(r.error is not None for r in results),
    }


def follow_array(
    ctx: typer.Context,
    array_id: str,
    ids: list[str],
    timeout: float | None,
    json_out: bool,
    submitted: dict[str, Any] | None = None,
) -> None:
    """Wait until every task of an array has ended, with a progress bar on stderr; exit 1
    naming those that did not end COMPLETE (or, past `timeout`, how many still run). With
    `--json`, one document: ``submitted`` (the batch's summary) merged with the end states."""
    wanted = set(ids)
    deadline = None if timeout is None else time.monotonic() + timeout
    ended: dict[str, TaskView] = {}
    with (
        connect(ctx) as hub,
        counting("running") as bar,
    ):
        job = bar.add_task("wait", total=len(wanted))
        pause = 0.3
        while True:
            tasks = hub.iter_tasks(tags={"cpnet.array_id": array_id}, page_size=1000)
            ended = {t.id: t for t in tasks if t.id in wanted and t.state.terminal}
            bar.update(job, completed=len(ended))
            if len(ended) == len(wanted):
                break
            if deadline is not None and time.monotonic() > deadline:
                if json_out:
                    print_json(
                        {
                            **(submitted or {}),
                            "array_id": array_id,
                            "states": {t.id: t.state.value for t in ended.values()},
                            "unfinished": len(wanted) - len(ended),
                        }
                    )
                fail(
                    f"{len(wanted) - len(ended)} of {len(wanted)} tasks still unfinished after "
                    f"{timeout:g} s",
                    f"follow them with `cpnet tasks --tag cpnet.array_id={array_id}`",
                )
            time.sleep(pause)
            pause = min(pause * 1.5, 5.0)  # a long array is not polled hard
    bad = sorted((t for t in ended.values() if t.state is not State.COMPLETE), key=lambda t: t.id)
    if json_out:
        states = {t.id: t.state.value for t in ended.values()}
        print_json({**(submitted or {}), "array_id": array_id, "states": states})
    else:
        errors.print(f"{len(ended) - len(bad)} of {len(ended)} tasks COMPLETE")
        for t in bad[:20]:
            why = f": {t.reason}" if t.reason else ""
            errors.print(f"  {t.id} {t.name or ''} {t.state.value}{why}", markup=False)
    if bad:
        fail(f"{len(bad)} of {len(ended)} tasks did not complete", f"see `cpnet logs {bad[0].id}`")


def follow(hub: Any, view: TaskView, timeout: float | None) -> TaskView:
    """Wait for a task to end, showing its state on a spinner (on stderr, so stdout stays clean)."""
    with errors.status(f"{view.id}: {view.state.value}") as spinner:

        def show(update: TaskView) -> None:
            where = f" on {update.pool_id}" if update.pool_id else ""
            spinner.update(f"{update.id}: {update.state.value}{where}")

        return hub.wait(view.id, timeout=timeout, on_update=show)
