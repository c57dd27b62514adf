"""pyboss raises its own soft fd limit to the hard one; its children get the soft limit
they would have had without pyboss."""
import pytest


def nofile(pid):
    """(soft, hard) RLIMIT_NOFILE of a live process, from /proc."""
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no 'Max open files' in /proc/%d/limits" % pid)


@pytest.mark.parametrize("soft, hard", [(1024, 4096), (512, 512)])
def test_pyboss_raises_its_own_soft_limit_and_not_its_childrens(start_pyboss, app, soft, hard):
    boss = start_pyboss([app[0]], wrapper=["prlimit", "--nofile=%d:%d" % (soft, hard)])
    assert nofile(boss.pid) == (hard, hard)
    assert nofile(boss.serving()["pid"]) == (soft, hard)
    result = boss.reload()
    assert result.returncode == 0, result.stderr
    assert nofile(boss.serving()["pid"]) == (soft, hard)    # every generation, not the first
