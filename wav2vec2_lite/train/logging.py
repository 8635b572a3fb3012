"""Run-directory logging: JSONL metrics, optional TensorBoard, tqdm, run metadata.

Only rank 0 writes (other ranks get a logger whose methods do nothing). Files in the
run directory::

    metrics.jsonl   one JSON object per line: {"kind": "train"|"valid"|"health"|"event"|"data",
                    "update": N, "epoch": E, "time": unix seconds, ...numbers}
    run.json        seed, code version (git describe / package version), torch
                    version, device, host, command line, start time
    config.yaml     the resolved run config (a resumed run with another config: the new one, and
                    run.json's ``config_changes`` say what changed)
    tensorboard/    event files when ``trainer.tensorboard=true``
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

import wav2vec2_lite
from wav2vec2_lite.train.checkpoint import atomic_write_text
from wav2vec2_lite.train.health import HealthWarning

__all__ = [
    "MetricsLogger",
    "code_version",
    "peak_memory_mb",
    "write_run_info",
    "read_metrics",
    "config_changes",
    "MetricsError",
]


class MetricsError(ValueError):
    """A ``metrics.jsonl`` line that is not a JSON record (named ``file:line``)."""


def code_version() -> str:
    """``git describe --always --dirty`` of the package's repo, else the package version."""
    pkg_dir = Path(wav2vec2_lite.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=pkg_dir,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0 and out.stdout.strip():
            return f"{wav2vec2_lite.__version__}+git.{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return wav2vec2_lite.__version__


def peak_memory_mb(device: torch.device | str | None = None) -> dict[str, float]:
    """Peak resident memory of this process (MiB) and, on CUDA, peak allocated GPU memory."""
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    rss_mb = rss_kb / (1024 * 1024) if sys.platform == "darwin" else rss_kb / 1024
    out = {"peak_rss_mb": round(rss_mb, 1)}
    if device is not None and torch.device(device).type == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def config_changes(old_yaml: str, new_yaml: str) -> list[str]:
    """``key: old -> new`` for every key whose value differs between two config.yaml texts
    (``(unset)`` for a key only one has), sorted by key."""
    old, new = _flat(yaml.safe_load(old_yaml) or {}), _flat(yaml.safe_load(new_yaml) or {})
    unset = object()
    return [
        f"{k}: {old.get(k, '(unset)')} -> {new.get(k, '(unset)')}"
        for k in sorted(set(old) | set(new))
        if old.get(k, unset) != new.get(k, unset)
    ]


def write_run_info(
    run_dir: Path, *, seed: int, config_yaml: str, device: str, extra: dict | None = None
) -> list[str]:
    """``run.json`` (this process: seed, code version, torch, host, argv, threads, ...) and
    ``config.yaml``. A resumed run keeps what its earlier processes recorded in
    ``earlier_processes`` (oldest first): the code a run trained with is all of them. Returns what
    changed from an earlier ``config.yaml`` (:func:`config_changes`; also run.json's
    ``config_changes``), empty for a new run or the same config."""
    run_dir.mkdir(parents=True, exist_ok=True)
    changes: list[str] = []
    if (run_dir / "config.yaml").is_file():
        try:
            changes = config_changes((run_dir / "config.yaml").read_text(encoding="utf-8"), config_yaml)
        except (OSError, ValueError, yaml.YAMLError) as e:  # not a config this code wrote
            changes = [f"config.yaml: the earlier one could not be read ({' '.join(str(e).split())[:200]})"]
    earlier: list[dict] = []
    if (run_dir / "run.json").is_file():
        try:
            previous = json.loads((run_dir / "run.json").read_text())
        except (OSError, ValueError):  # unreadable: nothing to keep
            previous = None
        if isinstance(previous, dict):  # anything else is not a record this code wrote
            kept = previous.pop("earlier_processes", [])
            earlier = (kept if isinstance(kept, list) else []) + [previous]
    info = {
        "seed": seed,
        "code_version": code_version(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
        "host": socket.gethostname(),
        "argv": sys.argv,
        "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "num_threads": torch.get_num_threads(),
        **(extra or {}),
        **({"config_changes": changes} if changes else {}),
        **({"earlier_processes": earlier} if earlier else {}),
    }
    atomic_write_text(run_dir / "run.json", json.dumps(info, indent=2) + "\n")
    atomic_write_text(run_dir / "config.yaml", config_yaml)
    return changes


def _clean(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no inf/nan; keep them visible
    return value


def read_metrics(
    path: str | os.PathLike, kind: str | None = None, *, torn: list[str] | None = None
) -> list[dict]:
    """All records of ``metrics.jsonl`` (of one ``kind`` if given).

    A last line cut short (a killed run; resuming drops it) is left out, and described in ``torn``
    when a list is given; any other line that is not a JSON object is a :class:`MetricsError`
    naming ``file:line``."""
    rows = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if n == len(lines):  # no newline after it: the write was cut
                if torn is not None:
                    torn.append(
                        f"{path}:{n}: left out a last line cut short ({e.msg}), as a killed run leaves"
                    )
                continue
            raise MetricsError(
                f"{path}:{n}: not a JSON record ({e.msg}, column {e.colno}); delete or repair that line"
            ) from None
        if not isinstance(row, dict):
            raise MetricsError(f"{path}:{n}: not a JSON object; delete or repair that line")
        if kind is None or row.get("kind") == kind:
            rows.append(row)
    return rows


class MetricsLogger:
    """JSONL (+ TensorBoard) metrics and a tqdm bar; a no-op on ranks other than 0."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        enabled: bool = True,
        tensorboard: bool = False,
        progress: bool = True,
        total_updates: int | None = None,
        resume_update: int | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._tb = None
        self._bar = None
        self._file = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / "metrics.jsonl"
        if resume_update is not None and path.exists():
            self._truncate_after(path, resume_update)
        self._file = open(path, "a", encoding="utf-8")
        if tensorboard:
            try:  # optional: tensorboard
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise RuntimeError(
                    "trainer.tensorboard=true needs the `tensorboard` package "
                    "(pip install 'wav2vec2_lite[tensorboard]'), or set trainer.tensorboard=false"
                ) from e
            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        if progress:
            self._bar = tqdm(
                total=total_updates, initial=resume_update or 0, unit="upd", dynamic_ncols=True, leave=True
            )

    @staticmethod
    def _truncate_after(path: Path, update: int) -> None:
        """Drop records a killed run wrote after the checkpoint we resume from."""
        keep = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut by the kill
                    continue
                if row.get("update", 0) <= update:
                    keep.append(json.dumps(row))
        atomic_write_text(path, "".join(k + "\n" for k in keep))

    def log(self, kind: str, update: int, metrics: dict[str, Any], epoch: int | None = None) -> None:
        if not self.enabled:
            return
        row = {"kind": kind, "update": update, "epoch": epoch, "time": round(time.time(), 3)}
        row.update({k: _clean(v) for k, v in metrics.items()})
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k not in ("kind", "update", "epoch", "time") and isinstance(v, (int, float)):
                    self._tb.add_scalar(f"{kind}/{k}", v, update)

    def health(self, warnings: list[HealthWarning], *, epoch: int | None) -> None:
        """Health warnings to the terminal and to metrics.jsonl as ``health`` records."""
        for w in warnings:
            record = w.record()
            del record["kind"], record["update"]
            self.log("health", w.update, record, epoch=epoch)
            self.write(w.message)

    def progress(self, n: int = 1, **postfix: Any) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(
                    {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()},
                    refresh=False,
                )

    def write(self, message: str) -> None:
        """A line of text that does not break the progress bar (rank 0 only)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._file is not None:
            self._file.close()
            self._file = None
