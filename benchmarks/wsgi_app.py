"""The same tiny app as a WSGI callable, for gunicorn.

Reads the same CONFIG (path in BENCH_APP_CONFIG) when a worker loads it: a ready delay
is spent before the worker can answer anything, an exit code ends the worker at start.
"""
import json
import os
import sys
import time

_config_path = os.environ.get("BENCH_APP_CONFIG")
_config = {}
if _config_path:
    with open(_config_path) as _f:
        _config = json.load(_f)
if _config.get("exit_code") is not None:
    sys.exit(int(_config["exit_code"]))
if _config.get("ready_delay"):
    time.sleep(float(_config["ready_delay"]))


def application(environ, start_response):
    body = json.dumps({"generation": 0, "pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
