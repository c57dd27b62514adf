"""A Twisted web resource for README's "Running popular servers" (`twist web --class`).

GET / answers {"generation": N, "pid": P}. (Twisted's WSGI container answers 500 to
requests on a unix socket, such as pyboss's probe, so the recipe serves a resource.)
"""
import json
import os

from twisted.web.resource import Resource

GENERATION = int(os.environ.get("PYBOSS_GENERATION", "0"))


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"generation": GENERATION, "pid": os.getpid()}).encode()
