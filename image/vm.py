#!/usr/bin/env python3
"""vm.py: a QEMU VM of the device image, for people and for tests/image (stdlib only).

    python3 image/vm.py up        boot a fresh copy of build/image/qemux86-64.img in the
                                  background; last line SUPERVISOR=http://127.0.0.1:<port>
    python3 image/vm.py down      power it off (ACPI, then quit) and remove the run dir
    python3 image/vm.py status    say what runs
    python3 image/vm.py shell CMD run CMD as root inside the VM (development mode's ttyS1)

The VM gets QEMU's user-mode network with `restrict=on`: it reaches nothing outside, and the
only way in is the supervisor API forwarded to 127.0.0.1:$QEMU_API_PORT (48490). KVM is used
when a probe shows that it works, else TCG. Each `up` boots a new copy of the image (a fresh
device) whose config.json has `developmentMode: true`, so the root shell on the second serial
port (balena-dev-shell.service) is there for `shell`; the built image stays a production one.

Files (build/qemu/): disk.img, console.log (ttyS0: GRUB, kernel, systemd), shell.sock
(ttyS1), qmp.sock (QEMU's monitor, QMP), qemu.pid. docs/device-image.md has the details.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGE = REPO / "build" / "image" / "qemux86-64.img"
RUN_DIR = Path(os.environ.get("QEMU_RUN_DIR", REPO / "build" / "qemu"))
GUEST_API_PORT = 48484
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS.fd")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


class VmError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"vm: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- QMP


class Qmp:
    """QEMU's machine protocol on its unix socket: one JSON command, one answer."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._sock.connect(str(path))
        self._file = self._sock.makefile("rw", encoding="utf-8")
        json.loads(self._file.readline())  # the greeting
        self.execute("qmp_capabilities")

    def execute(self, command: str, **arguments: object) -> object:
        message: dict[str, object] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self._file.write(json.dumps(message) + "\n")
        self._file.flush()
        while True:
            line = self._file.readline()
            if not line:
                raise VmError(f"QMP closed during {command}")
            reply = json.loads(line)
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise VmError(f"QMP {command}: {reply['error']}")
            # anything else is an asynchronous event: skip it

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
            self._sock.close()


# ----------------------------------------------------------------------------- serial shell


class SerialShell:
    """Commands for the development-mode root shell on the VM's ttyS1 (a unix socket here).

    The shell has no prompt and no echo. Each command is followed by a printf of an end
    marker with its exit status; the marker text is split in the command so that an echo
    could never match it. A command sent while the shell is not there (the VM is booting)
    is lost, so `run` sends it again until its marker comes back or the time is up.
    """

    _ids = itertools.count(1)

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock: socket.socket | None = None
        self._buffer = b""

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(self.path))
            self._sock = sock
            self._buffer = b""
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def run(self, command: str, timeout: float = 120.0, resend: float = 10.0) -> tuple[int, str]:
        """(exit status, output) of `command` run by bash as root in the VM.

        A command may run more than once (when its answer is lost in a reboot): send reads."""
        deadline = time.monotonic() + timeout
        while True:
            tag = f"{os.getpid()}-{next(self._ids)}"
            begin, end = f"bpy-beg-{tag}", f"bpy-end-{tag}"
            line = (f"printf '\\n%s\\n' '{begin[:4]}''{begin[4:]}';"
                    f" {{ {command}\n}} </dev/null 2>&1;"
                    f" printf '\\n%s %s\\n' '{end[:4]}''{end[4:]}' $?\n")
            try:
                sock = self._connect()
                sock.sendall(line.encode())
                found = self._read_until(sock, begin.encode(), end.encode(),
                                         min(deadline, time.monotonic() + resend))
            except OSError:
                self.close()
                found = None
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                raise VmError(f"no answer from the VM's shell to {command!r} in {timeout:.0f} s")

    def _read_until(self, sock: socket.socket, begin: bytes, end: bytes,
                    until: float) -> tuple[int, str] | None:
        while True:
            at = self._buffer.find(end + b" ")
            newline = self._buffer.find(b"\n", at) if at >= 0 else -1
            if newline >= 0:
                status = int(self._buffer[at + len(end) + 1:newline].strip() or b"255")
                start = self._buffer.rfind(begin + b"\n", 0, at)
                body = self._buffer[start + len(begin) + 1:at] if start >= 0 else b""
                self._buffer = self._buffer[newline + 1:]
                return status, body.decode(errors="replace").removesuffix("\n")
            left = until - time.monotonic()
            if left <= 0:
                return None
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                raise OSError("the shell socket closed")
            self._buffer += chunk.replace(b"\r", b"")  # the tty's onlcr

    def check(self, command: str, timeout: float = 120.0) -> str:
        status, output = self.run(command, timeout)
        if status != 0:
            raise VmError(f"{command!r} exited {status}: {output[-2000:]}")
        return output


# ----------------------------------------------------------------------------- the VM


class Vm:
    def __init__(self, run_dir: Path = RUN_DIR, image: Path = IMAGE,
                 api_port: int | None = None) -> None:
        self.run_dir = run_dir
        self.image = image
        self.api_port = api_port or _env_int("QEMU_API_PORT", 48490)
        self.disk = run_dir / "disk.img"
        self.console = run_dir / "console.log"
        self.qmp_path = run_dir / "qmp.sock"
        self.shell_path = run_dir / "shell.sock"
        self.pidfile = run_dir / "qemu.pid"
        self.portfile = run_dir / "port"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if str(self.run_dir).encode() in cmdline else None

    def running(self) -> bool:
        return self.pid() is not None

    def qmp(self) -> Qmp:
        return Qmp(self.qmp_path)

    def shell(self) -> SerialShell:
        return SerialShell(self.shell_path)

    def ping(self, timeout: float = 5.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=timeout) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    # -- up ------------------------------------------------------------------------------

    def up(self, boot_timeout: float | None = None) -> str:
        """Boot a fresh device: a new copy of the image, then `start`."""
        if self.running():
            if self.portfile.exists():
                self.api_port = int(self.portfile.read_text())
            log(f"already running (pid {self.pid()})")
            self.wait_ping(boot_timeout)
            return self.url
        if not self.image.exists():
            raise VmError(f"{self.image} does not exist: run 'make image'")
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.run_dir.mkdir(parents=True)
        log(f"copying {self.image.name} (a fresh device)")
        subprocess.run(["cp", "--sparse=always", str(self.image), str(self.disk)], check=True)
        # A disk larger than the image, as a USB stick is: resin-data grows into the rest
        # at first boot (balena-expand-data.service).
        grow = _env_int("QEMU_DISK_GROW_MB", 1024)
        os.truncate(self.disk, self.disk.stat().st_size + grow * 1024 * 1024)
        self._set_development_mode()
        self.start(boot_timeout=boot_timeout)
        return self.url

    def start(self, firmware: str | None = None, boot_timeout: float | None = None) -> None:
        """Start QEMU on the run dir's disk (BIOS, or UEFI with Debian's OVMF) and wait for
        the supervisor's /ping."""
        if self.running():
            raise VmError(f"already running (pid {self.pid()})")
        if _port_taken(self.api_port):
            raise VmError(f"127.0.0.1:{self.api_port} is taken: set QEMU_API_PORT")
        self.portfile.write_text(str(self.api_port))
        accel = "kvm" if kvm_works() else "tcg"
        firmware = firmware or os.environ.get("QEMU_FIRMWARE", "bios")
        log(f"booting ({firmware.upper()}, {accel.upper()}); console: {self.console}")
        subprocess.run(self._qemu_args(accel, firmware), check=True, stdin=subprocess.DEVNULL)
        self.wait_ping(boot_timeout)

    def _qemu_args(self, accel: str, firmware: str) -> list[str]:
        hostfwd = f"hostfwd=tcp:127.0.0.1:{self.api_port}-:{GUEST_API_PORT}"
        args = [
            "qemu-system-x86_64", "-name", "balena-py-image,debug-threads=on",
            "-machine", "q35", "-accel", accel, "-cpu", "host" if accel == "kvm" else "max",
            "-m", str(_env_int("QEMU_MEMORY_MB", 1536)), "-smp", str(_env_int("QEMU_SMP", 2)),
            "-display", "none", "-vga", "none",
            "-drive", f"file={self.disk},format=raw,if=virtio,cache=unsafe",
            "-nic", f"user,model=virtio-net-pci,restrict=on,{hostfwd}",
            # console.log keeps every boot of this VM (appended)
            "-chardev", f"file,id=console,path={self.console},append=on",
            "-serial", "chardev:console",
            "-chardev", f"socket,id=shell,path={self.shell_path},server=on,wait=off",
            "-serial", "chardev:shell",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-pidfile", str(self.pidfile), "-daemonize",
        ]
        if firmware == "uefi":
            vars_copy = self.run_dir / "OVMF_VARS.fd"
            shutil.copyfile(OVMF_VARS, vars_copy)
            args += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                     "-drive", f"if=pflash,format=raw,file={vars_copy}"]
        return args

    def wait_ping(self, timeout: float | None = None) -> None:
        limit = timeout if timeout is not None else _env_int("QEMU_BOOT_TIMEOUT", 900)
        deadline = time.monotonic() + limit
        while not self.ping():
            if not self.running():
                raise VmError(f"QEMU exited; last console lines:\n{self.console_tail()}")
            if time.monotonic() > deadline:
                raise VmError(f"no /ping answer at {self.url} within {limit} s; console:\n"
                              f"{self.console_tail()}")
            time.sleep(2)

    def console_tail(self, lines: int = 40) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return "(no console log)"
        return "\n".join(text.splitlines()[-lines:])

    def _set_development_mode(self) -> None:
        """config.json on the copy's resin-boot gets developmentMode: true (mtools)."""
        with self.disk.open("rb") as f:
            mbr = f.read(512)
        start_lba = struct.unpack_from("<I", mbr, 446 + 8)[0]
        target = f"{self.disk}@@{start_lba * 512}"
        env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
        raw = subprocess.run(["mcopy", "-i", target, "::/config.json", "-"], check=True,
                             capture_output=True, env=env).stdout
        config = json.loads(raw)
        config["developmentMode"] = True
        with tempfile.NamedTemporaryFile("w", suffix=".json", dir=self.run_dir,
                                         delete=False) as tmp:
            json.dump(config, tmp, indent=2)
        try:
            subprocess.run(["mcopy", "-o", "-i", target, tmp.name, "::/config.json"],
                           check=True, env=env)
        finally:
            os.unlink(tmp.name)

    # -- down ----------------------------------------------------------------------------

    def power_off(self, timeout: float = 180.0) -> None:
        """Press the power button (ACPI) and wait for QEMU to exit; pull the plug after
        `timeout`. The run dir (the disk) stays."""
        pid = self.pid()
        if pid is None:
            return
        log("powering off (ACPI)")
        try:
            qmp = self.qmp()
            qmp.execute("system_powerdown")
            qmp.close()
        except (OSError, VmError) as err:
            log(f"QMP: {err}")
        if not _wait_gone(pid, timeout):
            log("no power-off in time: quitting QEMU")
            with contextlib.suppress(OSError, VmError):
                self.qmp().execute("quit")
            if not _wait_gone(pid, 10):
                os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, 10)

    def down(self, timeout: float = 180.0) -> None:
        """power_off, then remove the run dir (QEMU_KEEP_LOGS=FILE keeps the console log)."""
        self.power_off(timeout)
        keep = os.environ.get("QEMU_KEEP_LOGS")
        if keep:
            with contextlib.suppress(OSError):
                shutil.copyfile(self.console, keep)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        log("down")


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.5)
    return False


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def kvm_works() -> bool:
    """KVM that can run a guest: /dev/kvm can exist and still fail at the first vCPU run
    (nested virtualisation without the MSRs QEMU sets). A firmware-only guest that is
    still running after 3 s means it works; QEMU aborting means it does not."""
    if os.environ.get("QEMU_ACCEL") in ("tcg", "kvm"):
        return os.environ["QEMU_ACCEL"] == "kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    probe = subprocess.Popen(
        ["qemu-system-x86_64", "-machine", "q35", "-accel", "kvm", "-cpu", "host", "-m", "64",
         "-display", "none", "-nodefaults", "-no-reboot"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        probe.wait(timeout=3)
        return False
    except subprocess.TimeoutExpired:
        probe.kill()
        probe.wait()
        return True


def main(argv: list[str]) -> int:
    vm = Vm()
    command = argv[1] if len(argv) > 1 else ""
    try:
        if command == "up":
            print(f"SUPERVISOR={vm.up()}", flush=True)
        elif command == "down":
            vm.down()
        elif command == "status":
            pid = vm.pid()
            if pid is None:
                print("vm: not running")
                return 1
            port = vm.portfile.read_text() if vm.portfile.exists() else "?"
            vm.api_port = int(port) if port.isdigit() else vm.api_port
            print(f"vm: running (pid {pid}), supervisor {vm.url}, "
                  f"/ping {'answers' if vm.ping() else 'does not answer'}")
        elif command == "shell" and len(argv) > 2:
            status, output = vm.shell().run(" ".join(argv[2:]))
            sys.stdout.write(output)
            return status
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except VmError as err:
        log(f"error: {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
