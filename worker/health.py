"""The health and metrics endpoints: a small ``aiohttp.web`` server on the event loop.

GET (and HEAD) routes only, each a plain function returning (status, content type,
body): probes and scrapes come a few times a second and answer from memory, so they run
on the loop itself, where the state they read lives. Other paths answer 404, other
methods 405. No access log: a probe every few seconds is not news.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[], tuple[int, str, bytes]]

#: How long stopping waits for a request being answered (seconds).
STOP_TIMEOUT = 2.0


class HealthServer:
    """Serves GET routes (path → handler returning status, content type, body)."""

    def __init__(self, host: str, port: int, routes: dict[str, Handler]) -> None:
        self._host = host
        self._port = port
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_get(path, _view(handler))
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=STOP_TIMEOUT)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        addresses = self._runner.addresses
        assert addresses, "the server is not started"
        return int(addresses[0][1])

    async def start(self) -> None:
        """Bind and serve in the background; raises OSError when the port is taken."""
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self._host, self._port).start()
        except OSError:
            await self._runner.cleanup()
            raise

    async def stop(self) -> None:
        """Stop serving."""
        await self._runner.cleanup()


def _view(handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def view(_request: web.Request) -> web.Response:
        status, content_type, body = handler()
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})

    return view
