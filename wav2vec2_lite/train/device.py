"""Whether torch can run on a device named by the user, one line naming the key if not."""

from __future__ import annotations

__all__ = ["check_device"]


def check_device(spec: str, key: str = "trainer.device") -> None:
    """ValueError naming ``key`` unless torch can run on ``spec`` here (``auto`` always can)."""
    import torch  # loaded by every caller already; kept out of this module's import for --help

    if spec == "auto" and key == "trainer.device":
        return
    given = f"{key}={spec}" if "." in key else f"{key} {spec}"
    try:
        device = torch.device(spec)
    except RuntimeError:
        choices = "auto, cpu, cuda, cuda:N or mps" if key == "trainer.device" else "cpu, cuda, cuda:N or mps"
        raise ValueError(f"{given}: not a device; use {choices}") from None
    cpu = given.removesuffix(spec) + "cpu"
    if device.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"{given}: no CUDA GPU is available here; use {cpu}")
        if device.index is not None and device.index >= n:
            raise ValueError(
                f"{given}: this machine has {n} CUDA GPU(s), cuda:0 to cuda:{n - 1}; use one of "
                f"them (or check CUDA_VISIBLE_DEVICES)"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{given}: Apple MPS is not available here; use {cpu}")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{given}: unsupported device type {device.type!r}; use {cpu} or cuda")
