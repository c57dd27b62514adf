"""An app that leaves COUNT short-lived orphans behind, then serves like the demo.

    orphan_factory.py COUNT MARKFILE

Each orphan is double-forked: an intermediate child forks a grandchild and exits at
once, so the grandchild's parent is gone and it lands on the nearest subreaper or on
PID 1, which must reap it. The grandchildren hold a pipe's write end; once the app
reads EOF there, every one of them has exited, and the app writes COUNT to MARKFILE.
"""
import os
import sys
import time

from pyboss import demo


def main():
    count, markfile = int(sys.argv[1]), sys.argv[2]
    read_end, write_end = os.pipe()
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            if os.fork() == 0:
                os.close(read_end)
                time.sleep(0.002)         # outlive the intermediate child a little
                os._exit(0)
            os._exit(0)
        os.waitpid(pid, 0)                # the app reaps its own children; not the orphans
    os.close(write_end)
    while os.read(read_end, 1):
        pass
    with open(markfile + ".tmp", "w") as f:
        f.write(str(count))
    os.rename(markfile + ".tmp", markfile)
    return demo.main([])


if __name__ == "__main__":
    sys.exit(main())
