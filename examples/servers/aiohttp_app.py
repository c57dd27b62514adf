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
    for sock in pyboss.listeners():
        await web.SockSite(runner, sock).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    pyboss.ready()
    await stop.wait()
    for site in list(runner.sites):
        await site.stop()            # stop accepting; the next generation takes the queue
    # aiohttp closes a connection whose request it has not read yet as idle: give the
    # connections accepted just before the stop time to send theirs.
    await asyncio.sleep(0.5)
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
