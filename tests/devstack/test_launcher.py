"""The one-command launcher: starts all three services, starts again one that dies, stops them all on
Ctrl-C; once up, it says where everything is and how to sign in, and then stays quiet."""

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from nectar.devstack import main as devstack_main  # noqa: F401 - packs the launcher and the services

pytestmark = pytest.mark.timeout(240)
BANNER_END = "Ctrl-C stops everything"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def launcher(database, tmp_path):
    ports = {"CORE_PORT": _free_port(), "MARKETING_PORT": _free_port(), "ADMIN_PORT": _free_port()}
    env = {
        **os.environ,
        **database.environ(),
        **{name: str(port) for name, port in ports.items()},
        "PYTHONPATH": os.pathsep.join(sys.path),
        "NECTAR_VAR_DIR": str(tmp_path / "var"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "nectar.devstack.main"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # Every line the launcher says, as it says it (None once it closes its output).
    said: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [*map(said.put, process.stdout), said.put(None)], daemon=True)
    reader.start()
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            line = said.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        lines.append(line)
        if BANNER_END in line:
            break
    else:
        process.kill()
    process.said = said
    yield process, ports, lines
    if process.poll() is None:
        process.kill()
        process.wait()


def _child_running(parent_pid: int, service: str) -> int:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat, open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
                argv = cmdline.read().split(b"\0")
        except OSError:
            continue
        if parent == parent_pid and b"service" in argv and service.encode() in argv and b"serve" in argv:
            return int(entry)
    raise AssertionError(f"no {service} child of {parent_pid}")


def _drain(process, lines):
    process.wait(60)
    while (line := process.said.get(timeout=10)) is not None:
        lines.append(line)
    return "".join(lines)


def _said_within(process, seconds: float) -> list[str]:
    """What the launcher says in the next `seconds`."""
    said, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = process.said.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        said.append(line)
    return said


def test_the_banner_says_where_everything_is_and_how_to_sign_in_then_the_stack_is_quiet(launcher):
    process, ports, lines = launcher
    output = "".join(lines)
    assert "Nectar Studio is up" in output, output
    banner = output[output.index("Nectar Studio is up") :]
    # Starting says what matters once: no worker lists the tasks and schedules it registers.
    assert "Registering task" not in output and "Adding tasks from blueprint" not in output, output
    for port in ports.values():
        assert f"http://127.0.0.1:{port}" in banner
    sign_in = re.search(r"admin sign-in: (.*)", banner)
    assert sign_in, banner
    if "created superadmin" in output:  # the first start on this database: its password, once
        assert re.search(r"superadmin@example\.com with password \S{12,}", sign_in.group(1)), banner
    else:
        assert "create-staff --email" in sign_in.group(1), banner
    # Idle: workers poll, beat and run their upkeep (every 0.2 to 10 s) without a word.
    assert _said_within(process, 12) == []
    # A second stack on other ports talks to its own services: marketing links to this core.
    pricing = f"http://127.0.0.1:{ports['MARKETING_PORT']}/pricing"
    with urllib.request.urlopen(pricing) as response:  # noqa: S310 - loopback
        assert f"http://127.0.0.1:{ports['CORE_PORT']}/" in response.read().decode()
    process.send_signal(signal.SIGINT)
    _drain(process, lines)
    assert process.returncode == 0


def test_runs_all_three_services_with_prefixed_logs_and_stops_on_ctrl_c(launcher):
    process, ports, lines = launcher
    assert any("Nectar Studio is up" in line for line in lines), "".join(lines)
    for name, port in ports.items():
        service = name.removesuffix("_PORT").lower()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz") as response:  # noqa: S310 - loopback
            assert json.load(response)["service"] == service  # customer pages no longer name it
    process.send_signal(signal.SIGINT)
    output = _drain(process, lines)
    assert process.returncode == 0
    for service in ("core", "marketing", "admin"):
        assert any(
            line.startswith(f"{service:<12} | ") for line in output.splitlines()
        ), f"no {service} lines"
    for worker in ("core-worker", "marketing-worker", "admin-worker"):
        assert any(
            line.startswith(f"{worker:<12} | ") for line in output.splitlines()
        ), f"no {worker} lines in:\n{output}"
    for port in ports.values():
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)  # noqa: S310


def test_a_service_that_dies_is_started_again_and_sigterm_still_stops_everything(launcher):
    process, ports, lines = launcher
    assert any("Nectar Studio is up" in line for line in lines), "".join(lines)
    core_pid = _child_running(process.pid, "core")
    # Each service runs in its own process group (the launcher's children), so this kills it whole.
    os.killpg(os.getpgid(core_pid), signal.SIGKILL)
    core = f"http://127.0.0.1:{ports['CORE_PORT']}/healthz"
    deadline = time.monotonic() + 90
    while True:
        assert process.poll() is None, "the launcher stopped"
        assert time.monotonic() < deadline, "core was not started again"
        try:
            if _child_running(process.pid, "core") != core_pid:
                with urllib.request.urlopen(core, timeout=2) as response:  # noqa: S310 - loopback
                    assert response.status == 200
                    break
        except (AssertionError, OSError):
            time.sleep(0.5)
    process.send_signal(signal.SIGTERM)  # as a process supervisor stops it (Ctrl-C: the test above)
    output = _drain(process, lines)
    assert process.returncode == 0
    assert output.count("core exited with status -9; starting it again in 1 s") == 1, output
    for port in ports.values():
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)  # noqa: S310
