"""The control protocol's lines, parsed within bounds.

A request is one JSON object on one line: {"command": "reload", "wait": true, "ack": true}
or {"command": "scale", "workers": 3}
("ack": the client wants {"accepted": true, "wait": SECONDS} first for work that takes
time; clients of earlier versions do not ask for it and get only the answer). Nothing a
caller sends may cost pyboss more than a bounded amount of memory and stack: the line is
at most MAX_REQUEST bytes and its brackets nest at most MAX_DEPTH deep (60 KB of '['
would otherwise raise RecursionError inside json).
"""
import json
import math
import re

MAX_REQUEST = 65536      # a Boss reload carries a command line and a directory
MAX_REPLY = 1 << 20      # a status with many listeners and 20 reloads stays far below
MAX_DEPTH = 4
COMMANDS = ("status", "reload", "stop", "scale", "upgrade")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(rb"[\[\]{}]")


class BadRequest(ValueError):
    """The request cannot be served; the message is the error the caller gets."""


def nesting_depth(line, limit=MAX_DEPTH):
    """How deep brackets nest outside strings; stops counting beyond limit."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub(b'""', line)):
        depth += 1 if bracket in b"[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


def parse_request(line):
    """bytes -> the request dict; BadRequest for anything pyboss will not serve."""
    if len(line) > MAX_REQUEST:
        raise BadRequest("request longer than %d bytes" % MAX_REQUEST)
    if nesting_depth(line) > MAX_DEPTH:
        raise BadRequest("request nested deeper than %d levels" % MAX_DEPTH)
    try:
        request = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):
        raise BadRequest("a request is one JSON object on one line") from None
    if not isinstance(request, dict):
        raise BadRequest("a request is one JSON object on one line")
    command = request.get("command")
    if command not in COMMANDS:
        raise BadRequest("unknown command %s" % json.dumps(command)[:80])
    for flag in ("wait", "ack", "after_sighup"):
        if not isinstance(request.get(flag, False), bool):
            raise BadRequest("'%s' must be true or false" % flag)
    return request


def encode(obj):
    return json.dumps(obj).encode() + b"\n"


def parse_reply(line):
    """A supervisor's answer line -> dict; ValueError if it is not one."""
    reply = json.loads(line.decode("utf-8"))
    if not isinstance(reply, dict):
        raise ValueError("not a JSON object")
    return reply


def announced_wait(reply, limit):
    """The seconds an "accepted" reply says the work can take, within [0, limit]."""
    wait = reply.get("wait")
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not math.isfinite(wait):
        return limit
    return min(max(wait, 0.0), limit)
