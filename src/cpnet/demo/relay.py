"""A userspace TCP relay that holds every chunk for a fixed time each way (never reordering):
latency for multi-site examples and tests on one machine, since this kernel has no ``netem``
(ENGINES.md). 25 ms each way gives a ~50 ms round trip; bandwidth is untouched (chunks are
pipelined, not sent one at a time)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time


class DelayProxy:
    """Listens on (host, port) and relays each connection to (target_host, target_port)."""

    def __init__(
        self, host: str, port: int, target_host: str, target_port: int, delay_s: float
    ) -> None:
        self.host, self.port = host, port
        self.target = (target_host, target_port)
        self.delay_s = delay_s
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delay-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> DelayProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError("the delay proxy did not start")
        if self._server is None:
            raise AssertionError(f"the delay proxy could not listen on {self.host}:{self.port}")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._serve, self.host, self.port)
            )
        finally:
            self._ready.set()
        self._loop.run_forever()
        self._server.close()
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        with contextlib.suppress(Exception):
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    async def _serve(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            cw.close()
            return
        await asyncio.gather(self._pipe(cr, uw), self._pipe(ur, cw), return_exceptions=True)
        for w in (cw, uw):
            w.close()

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            while chunk := await r.read(64 * 1024):
                queue.put_nowait((time.monotonic() + self.delay_s, chunk))
            queue.put_nowait((time.monotonic() + self.delay_s, b""))

        async def write() -> None:
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if not chunk:
                    with contextlib.suppress(OSError):
                        w.write_eof()
                    return
                w.write(chunk)
                await w.drain()

        await asyncio.gather(read(), write())
