"""Watching and ending server processes, and the private dirs and logs both servers run with."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import signal
import time
from pathlib import Path
from typing import Final

from zerodb_batch.embedded.errors import EmbeddedError

STOP_TIMEOUT: Final = 10.0
_SUN_PATH_MAX: Final = 107  # sockaddr_un.sun_path is 108 bytes including the NUL


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return f"--- last lines of {path} ---\n" + "\n".join(text.splitlines()[-lines:])


def socket_dir(preferred: Path, data_dir: Path, socket_name: str, tag: str) -> Path:
    """`preferred` if the socket path fits in sun_path, else a short /tmp dir unique to data_dir."""
    if len(os.fsencode(preferred / socket_name)) <= _SUN_PATH_MAX:
        return preferred
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:12]
    return Path("/tmp") / f"zerodb-{digest}-{tag}"


def private_dir(path: Path, owner: pwd.struct_passwd | None) -> None:
    """Create `path` as a 0700 directory owned by `owner` (or by us)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if path.is_symlink() or not path.is_dir():
        raise EmbeddedError(f"{path} must be a directory, not a symlink or file")
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)
    elif st.st_uid != os.geteuid():
        # A /tmp fallback dir made by another user could let them reach our sockets.
        raise EmbeddedError(f"{path} belongs to uid {st.st_uid}, not to us; remove it")
    path.chmod(0o700)


def pid_alive(pid: int) -> bool:
    """True if `pid` runs and is not a zombie (an unreaped orphan counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        proc_stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    return proc_stat.rpartition(")")[2].split()[0] != "Z"


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").rstrip("\0").split("\0")


def shared_memory_users(shmid: int) -> int | None:
    """How many processes have the System V segment `shmid` attached: 0 once it is gone, None
    where the kernel does not say (no /proc/sysvipc)."""
    try:
        rows = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return None
    # Columns: key shmid perms size cpid lpid nattch ...
    found = (int(row.split()[6]) for row in rows if int(row.split()[1]) == shmid)
    return next(found, 0)


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def terminate(pid: int, sig: signal.Signals, timeout: float = STOP_TIMEOUT) -> None:
    """Send `sig`, then SIGKILL if `pid` has not exited within `timeout`."""
    for signum, wait in ((sig, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        if wait_gone(pid, wait):
            return
    raise EmbeddedError(f"process {pid} survived SIGKILL")
