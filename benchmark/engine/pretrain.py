"""The pretraining engine's entry: a method (``methods.<name>``) turned into a trained encoder.

One code path for one CPU core and for many GPUs: device auto, DataLoader workers and pinned
memory, channels_last, AMP (bf16 autocast on CPU behind ``pretrain.amp``; fp16 with a gradient
scaler or bf16 on CUDA), per-epoch lr schedules, DDP (torchrun or SLURM variables, one process
per device), checkpoints every epoch and every N steps with exact resume, a kNN monitor on a
held-out split, a NaN/inf guard and SIGTERM/SIGUSR1 handling.

Methods with named views (``Method.views``) get one augmented view per name; when a method sets
``key_encoder_spec`` the engine keeps its momentum key encoder (``benchmark/engine/key_encoder.py``),
in the checkpoint beside the trained encoder. Single-view methods take the original path.

Writes ``<run_dir>/log.jsonl`` (one line per epoch), ``<run_dir>/checkpoints/`` and, at the
end, ``<run_dir>/encoder.pt`` (format in docs/CONTRACTS.md). The run folder is locked while a
process pretrains into it (``<run_dir>/.lock``): a second one waits, then resumes or finds the
encoder done.

The parts: ``loop`` (the training loop), ``views`` (view routing), ``guard`` (NaN/inf),
``signals`` (stop requests), ``wiring`` (encoder, method, optimizer, autocast, DDP),
``epoch_log`` (meter, log.jsonl, TensorBoard), ``checkpoint`` (save, resume), ``run_lock`` (the
folder lock handshake), ``encoder_file`` (encoder.pt), ``data``, ``monitor``, ``schedule``.

CLI: ``python -m benchmark.pretrain --profile mini --method invp --run-dir DIR``, also under
``torchrun --nproc_per_node=N -m benchmark.pretrain ...`` (benchmark/harness/pretrain_cli.py).
"""
from __future__ import annotations

from pathlib import Path

from benchmark.core.config import ConfigError, RunConfig
from benchmark.core.distributed import init_distributed
from benchmark.core.runtime import configure_cudnn, configure_threads
from benchmark.core.stop_request import clear_stop_request, preemption_signals
from benchmark.data import resolve_data_root
from benchmark.engine.checkpoint import RESUME_MODES
from benchmark.engine.data import build_pretrain_data
from benchmark.engine.encoder_file import ENCODER_FILE, finished_encoder
from benchmark.engine.loop import PretrainRun
from benchmark.engine.run_lock import run_dir_lock
from methods.base import method_class


def _check_request(cfg: RunConfig, resume: str) -> None:
    if "method" not in cfg.tree:
        raise ConfigError("the run config has no method; resolve it with a method (--method invp)")
    if resume not in RESUME_MODES:
        raise ConfigError(f"--resume {resume!r}; valid values: {', '.join(RESUME_MODES)}")


def prepare_run(cfg: RunConfig, run_dir: Path, resume: str = "auto",
                data_root: str | Path | None = None) -> PretrainRun:
    """Initialise the process (distributed group, threads), load the data, build the run and
    restore its newest checkpoint per ``resume``; :meth:`PretrainRun.run` then trains. Callers
    that may share ``run_dir`` with another process hold
    :func:`~benchmark.engine.run_lock.run_dir_lock` (as :func:`pretrain` does)."""
    _check_request(cfg, resume)
    dist = init_distributed(str(cfg.tree["device"]))
    configure_threads(int(cfg.tree["threads"]))
    configure_cudnn(bool(cfg.pretrain["cudnn_benchmark"]))
    views = method_class(str(cfg.method["name"])).view_sizes(cfg.method)
    run = PretrainRun(cfg, run_dir, dist, build_pretrain_data(cfg, resolve_data_root(data_root), views))
    run.resume(resume)
    return run


def pretrain_unless_done(cfg: RunConfig, run_dir: Path, resume: str = "auto",
                         data_root: str | Path | None = None, reuse: bool = True) -> tuple[Path, bool]:
    """:func:`pretrain`, and with ``reuse`` an ``encoder.pt`` already in ``run_dir`` (perhaps
    written by another process while this one waited for the folder's lock) is returned without
    training, once it is checked to load (one that does not raises
    :class:`~benchmark.core.safe_load.LoadError` naming it). Returns the encoder's path and whether
    this call trained it."""
    _check_request(cfg, resume)
    run_dir = Path(run_dir)
    try:
        with preemption_signals():  # also while loading: a stop asked then is honoured at step 1
            dist = init_distributed(str(cfg.tree["device"]))
            with run_dir_lock(run_dir, dist):
                encoder = run_dir / ENCODER_FILE
                if reuse and finished_encoder(encoder, dist):
                    return encoder, False
                return prepare_run(cfg, run_dir, resume, data_root).run(), True
    finally:
        clear_stop_request()  # a stop request belongs to this run only


def pretrain(cfg: RunConfig, run_dir: Path, resume: str = "auto", data_root: str | Path | None = None) -> Path:
    """Pretrain ``cfg.method`` on ``cfg.data`` into ``run_dir``; returns ``<run_dir>/encoder.pt``.

    ``resume``: ``auto`` continues from the newest valid checkpoint (refusing one of another
    config), ``never`` starts fresh, ``force`` continues even on a config mismatch. The data
    root is ``data_root``, else ``$BENCHMARK_DATA``, else ``./data``. SIGTERM/SIGUSR1 (or
    :func:`~benchmark.core.stop_request.request_stop`) checkpoint after the current step and raise
    :class:`~benchmark.core.errors.Preempted`. While another process pretrains into ``run_dir``
    (it holds the folder's lock), this one waits.
    """
    return pretrain_unless_done(cfg, run_dir, resume, data_root, reuse=False)[0]
