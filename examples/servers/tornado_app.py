"""Tornado on every socket pyboss passes (README: "Running popular servers").

    pyboss exec --listen 127.0.0.1:8080 -- python tornado_app.py

Tornado's accept loop runs until accept() would block, so its sockets must be
non-blocking: pyboss.listeners(blocking=False). READY=1 once they serve; SIGTERM stops
accepting and finishes the requests in flight.
"""
import asyncio
import os
import signal

import tornado.httpserver
import tornado.web

import pyboss

GENERATION = int(os.environ.get("PYBOSS_GENERATION", "0"))


class Hello(tornado.web.RequestHandler):
    def get(self):
        self.write({"generation": GENERATION, "pid": os.getpid()})


async def main():
    server = tornado.httpserver.HTTPServer(tornado.web.Application([("/", Hello)]))
    server.add_sockets(pyboss.listeners(blocking=False))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    pyboss.ready()
    await stop.wait()
    server.stop()
    await asyncio.sleep(0.5)         # requests already accepted get their answer
    await server.close_all_connections()


if __name__ == "__main__":
    asyncio.run(main())
