"""A broken build: importing it fails, as a typo in a deploy would."""
raise RuntimeError("this build is broken")
