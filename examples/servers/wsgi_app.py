"""A WSGI app for the recipes in README's "Running popular servers" (gunicorn, Twisted).

GET / answers {"generation": N, "pid": P}: which generation of the app served it.
"""
import json
import os

GENERATION = int(os.environ.get("PYBOSS_GENERATION", "0"))


def app(environ, start_response):
    body = json.dumps({"generation": GENERATION, "pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
