"""A program that supervises itself with pyboss.Boss (argparse flavour).

    python3 myblog.py --http=127.0.0.1:8080                   # bypass: just run
    python3 myblog.py --pyboss=start --http=127.0.0.1:8080    # supervise itself
    python3 /srv/new/myblog.py --pyboss=reload                # swap in a new version
    python3 myblog.py --pyboss=status
    python3 myblog.py --pyboss=stop

GET / answers {"version": ..., "greeting": ..., "generation": N, "pid": P}.
"""
import argparse
import json
import os
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pyboss

VERSION = "1"

boss = pyboss.Boss("myblog")
http = boss.listener("http", "tcp", "127.0.0.1:8080", help="where the blog is served")


class Server(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = False
    block_on_close = True       # server_close() waits for the requests in flight


def serve(handle, greeting):
    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"version": VERSION, "greeting": greeting,
                               "generation": handle.generation, "pid": os.getpid()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = Server(None, Page, bind_and_activate=False)
    server.socket = http.socket()       # already listening: bound by pyboss or by Boss
    accepting = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    accepting.start()
    handle.ready()                      # the previous version is retired from now on
    handle.wait()                       # SIGTERM: stop accepting, finish what is in flight
    server.shutdown()
    accepting.join()
    server.server_close()
    return 0


def main():
    parser = argparse.ArgumentParser(description="A tiny blog.", epilog=boss.usage(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--greeting", default="hello")
    args = parser.parse_args()          # Boss already took --pyboss and --http out
    boss.run(lambda handle: serve(handle, args.greeting))


if __name__ == "__main__":
    main()
