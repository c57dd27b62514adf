"""myblog.py's twin written with click: Boss's options never reach click.

    python3 clickblog.py --greeting hi --pyboss=start --http=127.0.0.1:8080
    python3 clickblog.py --pyboss=reload
"""
import json
import os
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import click

import pyboss

VERSION = "1"

boss = pyboss.Boss("clickblog")
http = boss.listener("http", "tcp", "127.0.0.1:8080", help="where the blog is served")


class Server(socketserver.ThreadingMixIn, HTTPServer):
    block_on_close = True


def serve(handle, greeting):
    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"version": VERSION, "greeting": greeting,
                               "generation": handle.generation, "pid": os.getpid()}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = Server(None, Page, bind_and_activate=False)
    server.socket = http.socket()
    accepting = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    accepting.start()
    handle.ready()
    handle.wait()
    server.shutdown()
    accepting.join()
    server.server_close()


@click.command(epilog=boss.usage())
@click.option("--greeting", default="hello", help="What every page says.")
def cli(greeting):
    boss.run(lambda handle: serve(handle, greeting))


if __name__ == "__main__":
    cli()
