"""aiohttp on every socket pyboss passes (README: "Running popular servers").

    pyboss exec --listen 127.0.0.1:8080 -- python aiohttp_app.py

READY=1 once every socket serves; SIGTERM stops accepting and finishes requests in flight.
"""
import asyncio
import os
import signal

from aiohttp import web

import pyboss

GENERATION = int(os.environ.get("PYBOSS_GENERATION", "0"))


async def hello(request):
    return web.json_response({"generation": GENERATION, "pid": os.getpid()})


async def main():
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    sockets = pyboss.listeners()
    for sock in sockets:
        await web.SockSite(runner, sock).start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    pyboss.ready()
    await stop.wait()
    # Stop accepting (the next generation takes the queue), but close the servers only
    # once the connections accepted so far are set up: asyncio sets up each in a task of
    # its own a few ticks later, and before Python 3.12 it drops (resets) one whose server
    # was closed in the meantime.
    for sock in sockets:
        loop.remove_reader(sock.fileno())
    await settled(loop, lambda: len(asyncio.all_tasks()) > 1, 5)
    for site in list(runner.sites):
        await site.stop()
    # aiohttp's cleanup closes a connection whose request it has not read yet as idle:
    # let those send theirs, be answered and be closed by their clients. Bounded: a
    # keep-alive client may hold a connection open for good.
    await settled(loop, lambda: runner.server.connections, 5)
    await runner.cleanup()


async def settled(loop, busy, seconds):
    """Once busy() is false, or after seconds."""
    deadline = loop.time() + seconds
    while busy() and loop.time() < deadline:
        await asyncio.sleep(0.01)


if __name__ == "__main__":
    asyncio.run(main())
