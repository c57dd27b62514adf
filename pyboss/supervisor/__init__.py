"""The core supervisor: generations on shared listeners, the event loop, and the reload
state machine. It knows nothing of click, start_server or Boss."""
