"""An ASGI app for the recipes in README's "Running popular servers" (uvicorn, hypercorn,
gunicorn with uvicorn workers). GET / answers {"generation": N, "pid": P}."""
import json
import os

GENERATION = int(os.environ.get("PYBOSS_GENERATION", "0"))


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = json.dumps({"generation": GENERATION, "pid": os.getpid()}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
