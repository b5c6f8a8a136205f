"""The run log: challenge-grammar `key:value` lines, versions and hardware first, one final `RESULT {json}` line.

Only rank 0 writes. Lines go to stdout and to the log file (line-buffered, so a killed run keeps its log).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time


class RunLog:
    def __init__(self, path: str | None, is_main: bool = True, console: bool = True):
        self.path = path
        self.is_main = is_main
        self.console = console
        self._fh = None
        if is_main and path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._fh = open(path, "w", encoding="utf-8", buffering=1)

    def log(self, line: str = "", console: bool = True) -> None:
        if not self.is_main:
            return
        if console and self.console:
            print(line, flush=True)
        if self._fh is not None:
            self._fh.write(line + "\n")

    def header(self, h, device_desc: str, world_size: int) -> None:
        """Versions, hardware and the full resolved configuration, as the records' logs begin."""
        import torch

        self.log(f"run_started:{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
        self.log(f"python:{platform.python_version()} torch:{torch.__version__} cuda:{torch.version.cuda or 'none'}")
        self.log(f"platform:{platform.platform()} cpu_count:{os.cpu_count()}")
        self.log(f"device:{device_desc} world_size:{world_size}")
        if torch.cuda.is_available():
            smi = _nvidia_smi()
            if smi:
                self.log(smi, console=False)
        self.log("hyperparameters:")
        for env_name, value in h.env_items():
            self.log(f"  {env_name}={value}")
        self.log("=" * 100, console=False)

    def result(self, payload: dict) -> None:
        self.log("RESULT " + json.dumps(payload, sort_keys=True))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


# Seconds between two progress lines of one long phase.
PROGRESS_EVERY_S = 10.0


class Progress:
    """`<phase>_progress: 35% <unit>:done/total elapsed:12s` lines at most every `every_s` seconds, so a long phase
    (sliding-window eval, TTT, GPTQ calibration) is never silent. `log` is a RunLog.log (rank 0 writes) or None."""

    def __init__(self, log, phase: str, total: int, unit: str = "tokens", every_s: float | None = None):
        self.log, self.phase, self.total, self.unit = log, phase, max(int(total), 1), unit
        self.every_s = PROGRESS_EVERY_S if every_s is None else every_s
        self.t0 = self.last = time.perf_counter()

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if self.log is None or now - self.last < self.every_s:
            return
        self.last = now
        self.log(f"{self.phase}_progress: {100.0 * done / self.total:.0f}% {self.unit}:{done}/{self.total} "
                 f"elapsed:{now - self.t0:.0f}s")


def _nvidia_smi() -> str:
    try:
        return subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def versions_info() -> dict:
    """torch/CUDA/GPU names for metrics.json and submission.json."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda or "",
        "gpu_name": gpu,
        "gpu_count": count,
        "hardware": f"{count}x{gpu}" if gpu else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "argv": " ".join(sys.argv),
    }
