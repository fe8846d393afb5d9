"""Child processes of the development tools (the demo's worker, the stand-in's process)."""

from __future__ import annotations

import signal
import subprocess


def stop(process: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM ``process`` if it still runs and wait for it (SIGKILL after ``timeout``);
    its exit code. Safe to call again."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
