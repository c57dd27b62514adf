"""Rolling reloads across a fleet: Ansible, HAProxy, and pyboss under a real systemd per host.

Three hosts, each a systemd booted in namespaces of its own with its own address on a
private bridge, run the app from units written by `pyboss units`. Debian's HAProxy
balances across them with health checks while a load client sends requests through it
on a fresh connection each. ansible-playbook runs examples/ansible/rolling-reload.yml
(serial 1, max_fail_percentage 0, the reload task is `systemctl reload`).

Deselect with `-m "not fleet"`.
"""
import json
import os
import re
import shutil
import time

import pytest

from fleet_hosts import APP, APP_ROOT, BALANCER_PORT, LAN, Fleet, missing_tools, write_build
from private_network import PrivateBridge
from pyboss_testing import wait_until
from supervised_units import LoadInside

pytestmark = pytest.mark.fleet


@pytest.fixture
def builds(tmp_path):
    """v1 (serving when the test starts), v2 (the new build) and v2-broken (exits at start,
    as a build missing a dependency on one host would)."""
    directory = tmp_path / "builds"
    return {"v1": write_build(directory, "v1", "--build", "v1"),
            "v2": write_build(directory, "v2", "--build", "v2"),
            "v2-broken": write_build(directory, "v2-broken", "--build", "v2", "--exit-code", "1")}


@pytest.fixture
def fleet(systemd_ns, tmp_path, builds):
    missing = missing_tools()
    if missing:
        pytest.fail("the fleet test needs %s; the README's test command installs them"
                    % ", ".join(missing), pytrace=False)
    with PrivateBridge(LAN % 1 + "/24") as lan:
        yield Fleet(tmp_path, systemd_ns, lan, hosts=3, first_build=builds["v1"])
        # Leaving the with block ends HAProxy and the bridge's namespace; systemd_ns
        # then powers the hosts off.


def through_balancer(fleet):
    return LoadInside(fleet.lan, port=BALANCER_PORT, host=LAN % 1, threads=4)


def sessions_by_host(fleet):
    return {name: int(row["stot"]) for name, row in fleet.server_stats().items()}


def every_host_took_load(before, after):
    return sorted(before) == sorted(after) and all(after[h] > before[h] for h in before)


def failed_tasks(output):
    """[(host, result)] of every task ansible reported as fatal."""
    return [(host, json.loads(result)) for host, result in
            re.findall(r"^fatal: \[(\S+)\]: FAILED! => (\{.*\})$", output, re.M)]


def report(name, load, began, recap):
    print("\n%s: %d requests through HAProxy, %d failed, worst %.3f s, answers by build %s; "
          "rollout %.1f s; recap %s" % (name, load.result["requests"], load.failures,
                                        load.result["worst_latency"], load.result["builds"],
                                        time.monotonic() - began, recap))


def answer_once_drained(fleet, host, build):
    """host's first answer from build: the reload's verdict comes once the new generation
    serves, and the old one may still take a connection while it drains."""
    answers = []
    wait_until(lambda: answers.append(fleet.answer(host)) or answers[-1]["build"] == build,
               what="%s to answer with %s" % (host.name, build))
    return answers[-1]


def test_good_build_rolls_across_every_host_without_a_failed_request(fleet, builds):
    pids_before = [host.main_pid() for host in fleet.hosts]
    sessions_before = sessions_by_host(fleet)
    with through_balancer(fleet) as load:
        began = time.monotonic()
        status, output, recap = fleet.rollout(builds["v2"])
    report("good rollout", load, began, recap)

    assert status == 0, output
    assert sorted(recap) == ["host1", "host2", "host3"], output
    assert all(r["failed"] == 0 and r["changed"] == 3 for r in recap.values()), output
    for host in fleet.hosts:
        assert host.current() == APP_ROOT + "/releases/v2"
        answer = answer_once_drained(fleet, host, "v2")
        assert (answer["build"], answer["generation"]) == ("v2", 2), host.name
        assert host.reloads_logged() == 1, host.name
    # A reload, not a restart: the same pyboss on every host, holding the same socket.
    assert [host.main_pid() for host in fleet.hosts] == pids_before

    assert load.failures == 0, load.result
    # The load spanned the rollout: both builds answered, and HAProxy spread it over every host.
    assert set(load.result["builds"]) == {"v1", "v2"}, load.result
    assert every_host_took_load(sessions_before, sessions_by_host(fleet))


def test_broken_build_on_host_2_stops_the_rollout_there_while_it_serves_the_old(fleet, builds):
    host1, host2, host3 = fleet.hosts
    pid3 = host3.main_pid()
    sessions_before = sessions_by_host(fleet)
    with through_balancer(fleet) as load:
        began = time.monotonic()
        status, output, recap = fleet.rollout(builds["v2"],
                                              per_host_build={"host2": builds["v2-broken"]})
    report("broken rollout", load, began, recap)

    # The play failed at host 2's reload and never reached host 3.
    assert status != 0, output
    failed = failed_tasks(output)
    assert [(host, task["cmd"], task["rc"]) for host, task in failed] == [
        ("host2", ["systemctl", "reload", "myapp.service"], 1)], output
    assert sorted(recap) == ["host1", "host2"], output
    assert recap["host1"]["failed"] == 0 and recap["host2"]["failed"] == 1, output

    assert answer_once_drained(fleet, host1, "v2")["build"] == "v2"
    # Host 2 got the broken build, whose reload failed: it still serves v1, generation 1.
    assert host2.builds_deployed() == ["v1", "v2"] and host2.current() == APP_ROOT + "/releases/v2"
    assert (fleet.answer(host2)["build"], fleet.answer(host2)["generation"]) == ("v1", 1)
    # ... and its journal says why, as the README tells the operator to look there.
    journal = host2.ns.journal("myapp.service")
    assert "exits with status 1" in journal and "reload failed" in journal, journal
    # Host 3 untouched: nothing deployed, never reloaded, same pyboss.
    assert host3.builds_deployed() == ["v1"] and host3.current() == APP_ROOT + "/releases/v1"
    assert host3.reloads_logged() == 0 and host3.main_pid() == pid3
    assert fleet.answer(host3)["build"] == "v1"

    assert load.failures == 0, load.result
    assert set(load.result["builds"]) == {"v1", "v2"}, load.result
    assert every_host_took_load(sessions_before, sessions_by_host(fleet))
    assert all(row["status"] == "UP" for row in fleet.server_stats().values())


def test_rollout_reaching_a_host_still_starting_replaces_its_build_too(fleet, builds, tmp_path):
    # systemd merges a reload of a unit that is still starting into its start job: the
    # reload returns 0, and the build the start began with serves on. The role waits for
    # the start first.
    host1 = fleet.hosts[0]
    slow = write_build(tmp_path / "slow", "v1-slow", "--build", "v1", "--ready-delay", "8")
    myapp = host1.srv / "myapp"
    shutil.copytree(slow, myapp / "releases" / "v1-slow")
    os.symlink(APP_ROOT + "/releases/v1-slow", myapp / "current.new")
    os.replace(myapp / "current.new", myapp / "current")
    host1.ns.systemctl("restart", "--no-block", APP + ".service")
    wait_until(lambda: host1.ns.systemctl("show", "-P", "ActiveState", APP + ".service")
               .stdout.strip() == "activating", what="host1 to be starting")
    status, output, _ = fleet.rollout(builds["v2"])
    assert status == 0, output
    assert answer_once_drained(fleet, host1, "v2")["build"] == "v2"
