"""Where a number came from: code version, libraries, machine. Recorded beside every result."""
from __future__ import annotations

import functools
import hashlib
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


OUTPUT_PATHS = ("results", "reports")  # what runs write; changes there do not change a number


def git_state() -> dict[str, Any]:
    """Current commit and whether tracked files other than run outputs differ from it
    (``None`` outside a checkout)."""
    commit = _git("rev-parse", "HEAD")
    excluded = [f":(exclude){path}" for path in OUTPUT_PATHS]
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", *excluded)
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """Versions of the libraries that can change a number."""
    import numpy
    import sklearn
    import torch
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
    }


def device_description(device: Any) -> str:
    """Human-readable device name (GPU model or CPU model)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu:{cpu}"


NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")  # Linux: "... Kernel Module  550.54.15 ..."


def _nvidia_driver() -> str | None:
    """The NVIDIA kernel driver's version, None where the file is absent or unreadable."""
    try:
        text = NVIDIA_DRIVER_FILE.read_text()
    except OSError:
        return None
    words = text.split()
    return next((words[i + 1] for i, w in enumerate(words[:-1]) if w == "Module"), None)


def accelerator_info(device: Any, world_size: int) -> dict[str, Any]:
    """CUDA, cuDNN and driver versions and the GPU model of ``device`` (each None on a CPU), and
    the number of processes the job ran on."""
    import torch

    dev = torch.device(device)
    on_gpu = dev.type == "cuda"
    cudnn = torch.backends.cudnn.version() if on_gpu else None
    return {
        "cuda": torch.version.cuda if on_gpu else None,
        "cudnn": str(cudnn) if cudnn is not None else None,
        "driver": _nvidia_driver() if on_gpu else None,
        "gpu": torch.cuda.get_device_name(dev) if on_gpu else None,
        "world_size": int(world_size),
    }


def host_name() -> str:
    return socket.gethostname()


def file_hash(path: Path, length: int = 12) -> str:
    """sha256 of a file's bytes (first ``length`` hex digits): the identity of a checkpoint.
    Memoised per (path, size, mtime), so asking again for an unchanged file costs a stat."""
    stat = Path(path).stat()
    return _file_hash(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)[:length]


@functools.lru_cache(maxsize=256)
def _file_hash(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
