"""`cpnet agent`: run a site's agent next to its scheduler, from flags and/or a TOML file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from cpnet.agent.settings import AgentConfigError, AgentSettings, pool_from_table, read_agent_file
from cpnet.cli.config import state
from cpnet.cli.output import LogFormatOption, errors, fail, split_pairs
from cpnet.client import check_hub_url, check_token, config_path, read_config
from cpnet.registry.model import PoolDescriptor

POOL_PANEL = "Pool (declare one pool instead of discovering this machine)"


def pool_from_flags(
    *,
    name: str | None,
    pool_type: str | None,
    cpus: float | None,
    memory_gb: float | None,
    gpus: int | None,
    gpu_model: str | None,
    gpu_memory_gb: float | None,
    price_cpu: float | None,
    price_gpu: float | None,
    price_ram: float | None,
    currency: str | None,
    labels: dict[str, str],
) -> PoolDescriptor | None:
    """The pool the flags declare, or None when no pool flag was given."""
    given = [name, pool_type, cpus, memory_gb, gpus, gpu_model, price_cpu, price_gpu, price_ram]
    if all(v is None for v in given) and not labels:
        return None
    if cpus is None or memory_gb is None:
        raise AgentConfigError(
            "a pool declared with flags needs --cpus and --memory-gb "
            "(or give no pool flags and let the backend discover this machine)"
        )
    hardware: dict[str, Any] = {"cpu_cores": cpus, "memory_gb": memory_gb}
    if gpus:
        accelerator: dict[str, Any] = {"model": gpu_model or "unknown", "count": gpus}
        if gpu_memory_gb is not None:
            accelerator["memory_gb"] = gpu_memory_gb
        hardware["accelerators"] = [accelerator]
    elif gpu_model:
        raise AgentConfigError("--gpu-model needs --gpus N")
    price: dict[str, Any] = {}
    for key, value in (
        ("cpu_core_hour", price_cpu),
        ("gpu_hour", price_gpu),
        ("ram_gb_hour", price_ram),
        ("currency", currency),
    ):
        if value is not None:
            price[key] = value
    table: dict[str, Any] = {
        "name": name or "default",
        "hardware": hardware,
        "labels": labels,
        "price": price,
    }
    if pool_type:
        table["type"] = pool_type
    return pool_from_table(table, where="pool flags")


def agent(
    ctx: typer.Context,
    hub_url: Annotated[
        str | None,
        typer.Option("--hub", metavar="URL", help="Hub URL (default: CPNET_HUB, config file)."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token", metavar="SITE_TOKEN", help="The site's agent token (default: CPNET_TOKEN)."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", metavar="FILE.toml", help="Agent config file; flags win."),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend", help="Backend that runs tasks: local (default), slurm, kubernetes."
        ),
    ] = None,
    work_dir: Annotated[
        Path | None, typer.Option("--work-dir", metavar="DIR", help="Where tasks run.")
    ] = None,
    heartbeat: Annotated[
        float | None,
        typer.Option("--heartbeat", metavar="S", min=0.1, help="Heartbeat interval in seconds."),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", metavar="URL", help="Public address of the site, if any."),
    ] = None,
    probe_listen: Annotated[
        str | None,
        typer.Option(
            "--probe-listen",
            metavar="HOST:PORT",
            help="Answer other sites' network probes here (HOST: an address they reach).",
        ),
    ] = None,
    metrics_listen: Annotated[
        str | None,
        typer.Option(
            "--metrics-listen",
            metavar="HOST:PORT",
            help="Serve Prometheus metrics at http://HOST:PORT/metrics (no token: bind an "
            "address only your monitoring reaches, e.g. 127.0.0.1:9464).",
        ),
    ] = None,
    log_format: LogFormatOption = None,
    client_cert: Annotated[
        str | None,
        typer.Option(
            "--client-cert",
            metavar="MODE",
            help="auto: get a client certificate with the token and renew it (a hub run with "
            "--mtls require needs it); off (default). The hub's CA: the root --ca-file.",
        ),
    ] = None,
    options: Annotated[
        list[str] | None,
        typer.Option("--option", metavar="K=V", help="Backend setting (repeatable)."),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            metavar="URL",
            help="Ray backend: the cluster's Jobs API (dashboard) address, e.g. "
            "http://head:8265 (option ray_address).",
        ),
    ] = None,
    ray_local: Annotated[
        bool,
        typer.Option(
            "--ray-local",
            help="Ray backend: start a private local Ray head, stopped when the agent exits.",
        ),
    ] = False,
    pool_name: Annotated[
        str | None, typer.Option("--pool-name", rich_help_panel=POOL_PANEL, help="Pool name.")
    ] = None,
    pool_type: Annotated[
        str | None,
        typer.Option(
            "--pool-type",
            metavar="TYPE",
            rich_help_panel=POOL_PANEL,
            help="general | intelligent | supercomputing | edge.",
        ),
    ] = None,
    cpus: Annotated[
        float | None, typer.Option("--cpus", metavar="N", rich_help_panel=POOL_PANEL)
    ] = None,
    memory_gb: Annotated[
        float | None, typer.Option("--memory-gb", metavar="G", rich_help_panel=POOL_PANEL)
    ] = None,
    gpus: Annotated[
        int | None, typer.Option("--gpus", metavar="N", min=0, rich_help_panel=POOL_PANEL)
    ] = None,
    gpu_model: Annotated[
        str | None, typer.Option("--gpu-model", metavar="M", rich_help_panel=POOL_PANEL)
    ] = None,
    gpu_memory_gb: Annotated[
        float | None, typer.Option("--gpu-memory-gb", metavar="G", rich_help_panel=POOL_PANEL)
    ] = None,
    price_cpu: Annotated[
        float | None,
        typer.Option("--price-cpu", metavar="X", rich_help_panel=POOL_PANEL, help="Per core-hour."),
    ] = None,
    price_gpu: Annotated[
        float | None,
        typer.Option("--price-gpu", metavar="Y", rich_help_panel=POOL_PANEL, help="Per GPU-hour."),
    ] = None,
    price_ram: Annotated[
        float | None,
        typer.Option("--price-ram", metavar="Z", rich_help_panel=POOL_PANEL, help="Per GB-hour."),
    ] = None,
    currency: Annotated[
        str | None,
        typer.Option("--currency", metavar="CUR", rich_help_panel=POOL_PANEL, help="e.g. CNY."),
    ] = None,
    labels: Annotated[
        list[str] | None,
        typer.Option("--label", metavar="K=V", rich_help_panel=POOL_PANEL, help="Repeatable."),
    ] = None,
    measure: Annotated[
        bool | None,
        typer.Option(
            "--measure/--no-measure",
            help="Run calibration probes on each pool after joining (default: on).",
        ),
    ] = None,
    measure_budget: Annotated[
        float | None,
        typer.Option("--measure-budget", metavar="S", min=1, max=600, help="Probe seconds/pool."),
    ] = None,
    rediscover: Annotated[
        float | None,
        typer.Option(
            "--rediscover",
            metavar="S",
            min=0,
            max=86400,
            help="Look for new or vanished pools every S seconds (0: only when the backend "
            "notices a change; default 60). Declared pools never change.",
        ),
    ] = None,
    keep_work_dirs: Annotated[
        bool | None,
        typer.Option(
            "--keep-work-dirs/--remove-work-dirs",
            help="Keep every attempt's work dir after it ends, for debugging (default: removed "
            "once the hub has the final state; a task keeps its own with keep_work_dir).",
        ),
    ] = None,
    allow_host_exec: Annotated[
        bool,
        typer.Option(
            "--allow-host-exec",
            help="Accept tasks whose executors name a container image even without a container "
            "runtime, and run their commands on the host (their system_logs say so).",
        ),
    ] = False,
) -> None:
    """Run a site's agent: register its pools with the hub, heartbeat, and run assigned tasks.

    Pools come from `[[pool]]` tables in `--config`, plus one pool from the pool flags; with
    neither, the backend discovers this machine. Runs until interrupted.

    **Example:** `cpnet agent --hub http://hub:8470 --token cpn_… --pool-name cpu --cpus 16
    --memory-gb 64 --price-cpu 0.05 --label rack=a1`

    **Ray cluster:** `cpnet agent --hub http://hub:8470 --token cpn_… --backend ray
    --ray-address http://127.0.0.1:8265 --work-dir /shared/cpnet`
    **Kubernetes:** `cpnet agent --hub http://hub:8470 --token cpn_… --backend kubernetes
    --option kubeconfig=/etc/cpnet/kubeconfig --option namespace=cpnet-jobs`
    """
    from_file = read_agent_file(config) if config else {}
    flag_pool = pool_from_flags(
        name=pool_name,
        pool_type=pool_type,
        cpus=cpus,
        memory_gb=memory_gb,
        gpus=gpus,
        gpu_model=gpu_model,
        gpu_memory_gb=gpu_memory_gb,
        price_cpu=price_cpu,
        price_gpu=price_gpu,
        price_ram=price_ram,
        currency=currency,
        labels=split_pairs(labels, "--label"),
    )
    pools = list(from_file.get("pools", []))
    if flag_pool is not None:
        pools.append(flag_pool)
    root = state(ctx)
    # The user's saved login is never used as an agent credential; only its hub URL is.
    # Each value is checked with where it came from, so a mistyped one is one line naming it.
    if hub_url is not None:
        url = check_hub_url(hub_url, "given with --hub")
    elif root.hub:  # the root --hub, or CPNET_HUB
        url = check_hub_url(root.hub)
    elif from_file.get("hub_url"):
        url = check_hub_url(from_file["hub_url"], f"in {config}")
    elif saved := read_config().get("hub"):
        url = check_hub_url(str(saved), f"saved in {config_path()}")
    else:
        fail("no hub URL", 'pass --hub URL, set CPNET_HUB, or put hub = "…" in --config')
    if token is not None:
        secret = check_token(token, "given with --token")
    elif root.token:  # the root --token, or CPNET_TOKEN
        secret = check_token(root.token)
    elif from_file.get("token"):
        secret = check_token(from_file["token"], f"in {config}")
    else:
        fail(
            "no agent token",
            "pass --token SITE_TOKEN (from `cpnet admin site token SITE_ID`) or set CPNET_TOKEN",
        )
    values: dict[str, Any] = {
        "hub_url": url,
        "token": secret,
        "pools": pools,
        "options": {**from_file.get("options", {}), **split_pairs(options, "--option")},
    }
    if allow_host_exec:
        values["options"]["allow_host_exec"] = "true"
    for key, value in (
        ("backend", backend or from_file.get("backend")),
        ("work_dir", work_dir or from_file.get("work_dir")),
        ("heartbeat_interval_s", heartbeat or from_file.get("heartbeat_interval_s")),
        ("endpoint", endpoint or from_file.get("endpoint")),
        ("measure_on_join", measure if measure is not None else from_file.get("measure_on_join")),
        ("measure_budget_s", measure_budget or from_file.get("measure_budget_s")),
        (
            "rediscover_interval_s",
            rediscover if rediscover is not None else from_file.get("rediscover_interval_s"),
        ),
        ("network_probe_interval_s", from_file.get("network_probe_interval_s")),
        ("network_probe_bytes", from_file.get("network_probe_bytes")),
        ("probe_listen", probe_listen or from_file.get("probe_listen")),
        ("metrics_listen", metrics_listen or from_file.get("metrics_listen")),
        (
            "log_format",
            log_format
            or from_file.get("log_format")
            or os.environ.get("CPNET_LOG_FORMAT", "").strip().lower()
            or None,
        ),
        ("client_cert", client_cert or from_file.get("client_cert")),
        ("ca_file", _ca_file() or from_file.get("ca_file")),
        (
            "keep_work_dirs",
            keep_work_dirs if keep_work_dirs is not None else from_file.get("keep_work_dirs"),
        ),
    ):
        if value is not None:
            values[key] = value
    if ray_address or ray_local:
        if values.get("backend", "ray") != "ray":
            fail(
                "--ray-address and --ray-local are for the Ray backend",
                f"drop them, or use --backend ray instead of {values['backend']!r}",
            )
        if ray_address and ray_local:
            fail("both --ray-address and --ray-local given", "give one of them")
        values["backend"] = "ray"
        if ray_address:
            values["options"]["ray_address"] = ray_address
        else:
            values["options"]["ray_local"] = "true"
    try:
        settings = AgentSettings(**values)
    except AgentConfigError as err:
        fail(str(err), "fix the setting (see `cpnet agent --help`)")
    from cpnet.agent.main import run_agent

    described = ", ".join(p.name for p in pools) or "discovered by the backend"
    if settings.log_format != "json":  # a JSON log stays one object per line
        errors.print(
            f"cpnet agent → {settings.hub_url} (backend {settings.backend}; pools: {described})",
            style="dim",
        )
    from cpnet.agent.backends.base import BackendError

    try:
        run_agent(settings)
    except BackendError as exc:  # e.g. an unreadable kubeconfig: a setting to fix, not a crash
        fail(str(exc), f"check --backend {settings.backend} and its --option K=V settings")


def _ca_file() -> Path | None:
    """The root --ca-file (or CPNET_CA_FILE): the CA that signed the hub's certificate."""
    raw = os.environ.get("CPNET_CA_FILE")
    return Path(raw) if raw else None
