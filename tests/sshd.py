"""A real OpenSSH server on loopback, for pytest-xdist's `--tx ssh=...` workers.

The fleet tests (tests/test_fleet.py) need a worker that is not popen: its gateway runs
`ssh -F <config> <alias> python -c ...`, so the plugin's send-back path (results in
`workeroutput`) runs as on a real remote machine. The server is /usr/sbin/sshd with a
throwaway host key and client key, on a free port of 127.0.0.1, accepting only that
key; it logs to stderr (-e), which is kept for the error message when it does not come
up. tools/install_services.sh installs openssh-server; without it the tests skip,
unless VLMBENCH_REQUIRE_SSHD=1 (CI), where they fail.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")
REQUIRE_ENV = "VLMBENCH_REQUIRE_SSHD"
ALIAS = "vlmbench-fleet"
_START_S = 20.0


@dataclass(frozen=True)
class SshHost:
    """What an ssh client needs: `ssh -F config alias` reaches the server."""

    config: Path
    alias: str
    port: int

    def xspec(self, python: str, chdir: Path) -> str:
        """A pytest-xdist `--tx` spec for a worker on this host."""
        return f"ssh={self.alias}//ssh_config={self.config}//python={python}//chdir={chdir}"


def _missing(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: tools/install_services.sh installs it)")
    pytest.skip(f"{reason} (tools/install_services.sh installs it)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _keygen(path: Path, kind: str = "ed25519") -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "vlmbench-test",
                    "-f", str(path)], check=True, capture_output=True, timeout=30)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshHost]:
    """An OpenSSH server on 127.0.0.1 for this test session; yields the client's
    ssh_config and Host alias (verified with `ssh -F config alias true`)."""
    if not SSHD.is_file():
        _missing(f"no OpenSSH server at {SSHD}")
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            _missing(f"no {tool} on PATH")
    root = tmp_path_factory.mktemp("sshd")
    root.chmod(0o700)
    host_key, client_key = root / "host_key", root / "client_key"
    _keygen(host_key)
    _keygen(client_key)
    authorized = root / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    if os.geteuid() == 0:  # sshd's privilege separation directory
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    port = _free_port()
    server_cfg = root / "sshd_config"
    server_cfg.write_text("\n".join([
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {host_key}",
        f"AuthorizedKeysFile {authorized}",
        f"PidFile {root / 'sshd.pid'}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin prohibit-password",
        "AllowTcpForwarding no",
        "X11Forwarding no",
        "PrintMotd no",
        "LogLevel ERROR",
        "",
    ]))
    user = getpass.getuser()
    client_cfg = root / "ssh_config"
    client_cfg.write_text("\n".join([
        f"Host {ALIAS}",
        "  HostName 127.0.0.1",
        f"  Port {port}",
        f"  User {user}",
        f"  IdentityFile {client_key}",
        "  IdentitiesOnly yes",
        "  StrictHostKeyChecking no",
        "  UserKnownHostsFile /dev/null",
        "  LogLevel ERROR",
        "  BatchMode yes",
        "",
    ]))
    log = root / "sshd.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(server_cfg)],
                                stdout=err, stderr=err, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + _START_S
        while not _accepts(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sshd did not start (exit {proc.poll()}): "
                            f"{log.read_text(errors='replace').strip()[-2000:]}")
            time.sleep(0.05)
        check = subprocess.run(["ssh", "-F", str(client_cfg), ALIAS, "true"],
                               capture_output=True, text=True, timeout=30, check=False)
        if check.returncode != 0:
            pytest.fail(f"ssh to the test sshd failed ({check.returncode}): "
                        f"{check.stderr.strip()}; sshd: {log.read_text(errors='replace')[-2000:]}")
        yield SshHost(client_cfg, ALIAS, port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
