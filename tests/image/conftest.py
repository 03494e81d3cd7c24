"""tests/image: the device image booted in QEMU, end to end (`make qemu-test`).

One VM (a fresh copy of build/image/qemux86-64.img, image/vm.py) serves the whole session;
the tests run in file order and each leaves the device converged for the next. They see the
device as a user does: the supervisor API forwarded to 127.0.0.1, QEMU's monitor (QMP) for
the power button and power cuts, and the development-mode root shell on the VM's second
serial port to read files and ask Docker what really runs.

`make test` does not collect this folder (a run takes ~15 minutes of TCG): only QEMU_TEST=1,
which `make qemu-test` sets. The VM gets its own run dir (build/qemu-test) and API port
(QEMU_TEST_API_PORT, 48491), so a VM of `make qemu-up` is left alone. QEMU_KEEP=1 leaves the
VM running after the session, QEMU_REUSE=1 uses such a VM instead of a fresh one.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")

collect_ignore_glob: list[str] = [] if os.environ.get("QEMU_TEST") else ["test_*.py"]


def _vm_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bpy_image_vm", REPO / "image" / "vm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def wait_for(what: str, probe: Callable[[], T | None], timeout: float,
             interval: float = 2.0) -> T:
    """Poll `probe` until it returns something truthy; errors (a rebooting VM) mean "not yet"."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
        except (httpx.HTTPError, OSError, RuntimeError, ValueError, KeyError) as err:
            value, last = None, err
        else:
            last = value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; "
                                 f"last: {last!r}"[:4000])
        time.sleep(interval)


class Device:
    """The VM as the tests use it."""

    def __init__(self, vm: Any) -> None:
        self.vm = vm
        self.api = httpx.Client(base_url=vm.url, timeout=60.0)
        self.shell = vm.shell()

    def close(self) -> None:
        self.api.close()
        self.shell.close()

    # -- inside the VM -------------------------------------------------------------------

    def sh(self, command: str, timeout: float = 900.0) -> str:
        """Output of `command` (exit 0 expected), as root in the VM; waits through a boot."""
        return str(self.shell.check(command, timeout=timeout))

    def boot_id(self) -> str:
        return self.sh("cat /proc/sys/kernel/random/boot_id").strip().replace("-", "")

    def boot_ids(self) -> list[str]:
        """Every boot the persistent journal knows, oldest first (systemd 252's table)."""
        lines = self.sh("journalctl --list-boots --no-pager").splitlines()
        return [str(line.split()[1]) for line in lines
                if line.strip() and line.split()[0] != "IDX"]

    def container_env(self, container_id: str) -> dict[str, str]:
        out = self.sh(f"docker inspect -f '{{{{range .Config.Env}}}}{{{{println .}}}}{{{{end}}}}' "
                      f"{container_id}")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def supervised_containers(self) -> list[str]:
        """The service name of every container the supervisor made, running or not."""
        out = self.sh("docker ps -a --filter label=io.balena.supervised "
                      "--format '{{.Label \"io.balena.service-name\"}}'")
        return sorted(out.split())

    # -- through the API -----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        response = self.api.get("/v2/state/status")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def services(self) -> dict[str, dict[str, Any]]:
        return {c["serviceName"]: c for c in self.status()["containers"]}

    def wait_converged(self, running: set[str], timeout: float = 900.0,
                       check: Callable[[dict[str, dict[str, Any]]], bool] = lambda _: True,
                       ) -> dict[str, dict[str, Any]]:
        """Wait until the app is applied with exactly `running` services Running."""
        def probe() -> dict[str, dict[str, Any]] | None:
            status = self.status()
            services = {c["serviceName"]: c for c in status["containers"]}
            ok = (status["appState"] == "applied" and set(services) == running
                  and all(c["status"] == "Running" for c in services.values())
                  and check(services))
            return services if ok else None
        return wait_for(f"services {sorted(running)} Running", probe, timeout)

    def wait_rebooted(self, old_boot_id: str, timeout: float = 900.0) -> str:
        """The new boot id, once the VM has booted again and the supervisor answers."""
        def new_boot() -> str | None:
            boot = self.boot_id()
            return boot if boot != old_boot_id else None
        new = wait_for("a new boot", new_boot, timeout, interval=5.0)
        wait_for("/ping after the boot", lambda: bool(self.vm.ping()), timeout)
        return new


@pytest.fixture(scope="session")
def vm() -> Iterator[Any]:
    module = _vm_module()
    machine = module.Vm(run_dir=REPO / "build" / "qemu-test",
                        api_port=int(os.environ.get("QEMU_TEST_API_PORT", "48491")))
    # QEMU_REUSE=1 keeps a VM left running by an earlier QEMU_KEEP=1 run (development:
    # one test at a time); otherwise every session starts from a fresh device.
    if machine.running() and not os.environ.get("QEMU_REUSE"):
        machine.down()
    machine.up()
    yield machine
    if not os.environ.get("QEMU_KEEP"):
        machine.down()


@pytest.fixture(scope="session")
def device(vm: Any) -> Iterator[Device]:
    dev = Device(vm)
    yield dev
    dev.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A failed test shows the end of the VM's console and of the supervisor's journal."""
    outcome = yield
    report = outcome.get_result()
    dev = item.funcargs.get("device") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(dev, Device):
        report.sections.append(("VM console (ttyS0)", dev.vm.console_tail(60)))
        try:
            _, journal = dev.shell.run(
                "journalctl -b -u balena-supervisor --no-pager | tail -n 80", timeout=30)
            report.sections.append(("balena-supervisor journal", journal))
        except Exception as err:  # the VM may be down: the report must still be written
            report.sections.append(("balena-supervisor journal", f"unavailable: {err}"))
