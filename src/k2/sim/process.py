"""The exchange simulator in a child process (`k2 up --simulate`).

Real exchanges never share K2's process; a simulator in the same process would take the GIL from the feeds,
the writer and the API, and its work would count as K2's. The child is `python -m k2 simulate --json`; it dies
with its parent (Linux ``PR_SET_PDEATHSIG``), so a killed `k2 up` leaves no simulator behind.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class SimulatorProcess:
    def __init__(self, exchanges, rate: float, seed: int = 7) -> None:
        self.cmd = [sys.executable, "-m", "k2", "simulate", "--json", "--port", "0", "--rate", str(rate),
                    "--seed", str(seed), "--exchanges", ",".join(exchanges)]
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    async def start(self, *, coinbase_advanced: bool = False, timeout: float = 30.0) -> dict[str, str]:
        """Start the child; the settings (``binance_ws_url`` ...) that point K2 at it."""
        self.proc = subprocess.Popen(
            self.cmd, stdout=subprocess.PIPE, stderr=None, text=True,
            # its own process group: a Ctrl-C in the terminal reaches `k2 up`, which drains, then stops the child
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        try:
            line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
            urls = json.loads(line)["k2_simulator"]
        except Exception:
            await self.stop()
            raise RuntimeError("the exchange simulator did not start (see its output above)") from None
        # keep draining its output so it never blocks on a full pipe
        asyncio.get_running_loop().run_in_executor(None, self.proc.stdout.read)
        advanced = urls.pop("coinbase_advanced_ws_url", None)
        if coinbase_advanced and advanced:
            urls["coinbase_ws_url"] = advanced
        return urls

    async def stop(self) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(asyncio.to_thread(p.wait), 10)
        except asyncio.TimeoutError:
            p.kill()
            await asyncio.to_thread(p.wait)
