"""Task paths under /tmp, and software under /tmp, reach host executors whatever the agent's work
dir: a py-tes client against a real hub and a real host-exec agent whose work dir is under /tmp
(as in the README's tour) or outside it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cpnet.agent.runner import probe_private_tmp
from tests.integration.procs import AgentProc, HubProc, make_world, pool, wait_until
from tests.integration.test_tes import PYTES11, Raw, load_pytes

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0 or probe_private_tmp(Path("/var/tmp")) is not None,
        reason="a private /tmp needs root (CAP_SYS_ADMIN)",
    ),
]


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A directory outside /tmp, for file:// outputs and the outside-/tmp work dir."""
    root = Path(tempfile.mkdtemp(prefix="cpnet-layout-", dir="/var/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def host_exec_agent(hub: HubProc, work_dir: Path, files: Path, **env: str) -> tuple[AgentProc, str]:
    """A started host-exec agent (no container runtime) on its own site; the user's token."""
    world = make_world(hub, {"sz": ("general", "440300")}, org=f"o{uuid.uuid4().hex[:6]}")
    agent = AgentProc(hub, world.site_tokens["sz"], work_dir, [pool("cpu", cores=2)], env=env)
    agent.options = {
        "allow_host_exec": "true",
        "container_runtime": "none",
        "file_roots": str(files),
    }
    agent.start()
    user = hub.client(world.user_token)
    wait_until(lambda: user.pools(), 30, "the pool to appear", log=agent.log)
    return agent, world.user_token


@pytest.mark.parametrize("layout", ["work-dir-under-tmp", "work-dir-outside-tmp"])
def test_tes_inputs_under_tmp_reach_host_executors(
    hub: HubProc, agents: list[AgentProc], tmp_path: Path, outside_tmp: Path, layout: str
) -> None:
    if not PYTES11.is_dir():
        pytest.fail(f"py-tes 1.1 missing at {PYTES11}: run `make venv`")
    tes = load_pytes(PYTES11)
    work = tmp_path / "agent" if layout == "work-dir-under-tmp" else outside_tmp / "agent"
    files = outside_tmp / "files"
    files.mkdir()
    agent, token = host_exec_agent(hub, work, files)
    agents.append(agent)

    run = f"/tmp/tes-acceptance/{uuid.uuid4().hex[:8]}"
    greeting = f"{run}/in/greeting.txt"
    client = tes.HTTPClient(hub.url, token=token)
    created = client.create_task(
        tes.Task(
            name=f"tmp-layout-{layout}",
            inputs=[tes.Input(path=greeting, content="hello from the TES acceptance test\n")],
            outputs=[tes.Output(path=f"{run}/out/shout.txt", url=f"file://{files}/shout.txt")],
            executors=[
                tes.Executor(image="alpine", command=["sh", "-c", 'mkdir -p "$2" && cp "$1" "$2"',
                                                      "sh", greeting, f"{run}/out"]),
                tes.Executor(image="alpine", command=["tr", "a-z", "A-Z"],
                             stdin=f"{run}/out/greeting.txt", stdout=f"{run}/out/shout.txt"),
            ],
        )
    )  # fmt: skip
    tid = created if isinstance(created, str) else created.id
    task = Raw(hub.url, token).wait(tid, timeout=90)
    logs = task["logs"][-1]["system_logs"]
    assert task["state"] == "COMPLETE", "\n".join([*logs, str(task["logs"][-1]["logs"])])
    assert (files / "shout.txt").read_text() == "HELLO FROM THE TES ACCEPTANCE TEST\n"
    assert any("/tmp: private" in line for line in logs), logs
    assert not Path(run).exists()  # staged into the attempt's own /tmp, not the host's


def make_venv_with_a_tool(root: Path) -> Path:
    """A real venv under `root` with a module in its site-packages and a script in its bin."""
    venv = root / "x" / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = venv.glob("lib/python3*/site-packages")
    (site / "cpnet_layout_tool.py").write_text("GREETING = 'tool from a venv under /tmp'\n")
    script = venv / "bin" / "layout-tool"
    code = "import cpnet_layout_tool\nprint(cpnet_layout_tool.GREETING)\n"
    script.write_text(f"#!{venv}/bin/python\n{code}")
    script.chmod(0o755)
    return venv


@pytest.mark.parametrize("layout", ["work-dir-under-tmp", "work-dir-outside-tmp"])
def test_a_venv_under_tmp_on_the_agents_path_stays_whole(
    hub: HubProc, agents: list[AgentProc], tmp_path: Path, outside_tmp: Path, layout: str
) -> None:
    venv_root = Path(tempfile.mkdtemp(prefix="cpnet-venv-", dir="/tmp"))
    try:
        venv = make_venv_with_a_tool(venv_root)
        work = tmp_path / "agent" if layout == "work-dir-under-tmp" else outside_tmp / "agent"
        files = outside_tmp / "files"
        files.mkdir()
        path = f"{venv}/bin:{os.environ.get('PATH', '/usr/bin:/bin')}"
        agent, token = host_exec_agent(hub, work, files, PATH=path)
        agents.append(agent)
        with hub.client(token) as user:
            task = user.submit(
                {
                    "name": "venv-tool",
                    "executors": [
                        {"command": ["layout-tool"]},
                        {"command": ["python", "-c", "import cpnet_layout_tool, sys; "
                                     "print(sys.prefix)"]},
                    ],
                }
            )  # fmt: skip
            done = user.wait(task.id, timeout=90)
            full = user.task(task.id, full=True)
        logs = full.attempts[-1].system_logs if full.attempts else []
        assert done.state.value == "COMPLETE", (done.reason, logs)
        outs = [e.stdout for e in full.attempts[-1].executor_logs]
        assert outs == ["tool from a venv under /tmp\n", f"{venv}\n"], logs
    finally:
        shutil.rmtree(venv_root, ignore_errors=True)
