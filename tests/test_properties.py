"""Property-based tests (Hypothesis) of everything that parses what others send pyboss:
control requests, listen specs, notify messages and option values."""
import json
import math
import signal
import string

import click
import pytest
from hypothesis import given, settings, strategies as st

from pyboss import sd, values
from pyboss.listeners import ListenError, ListenSpec, parse_spec
from pyboss.options import SECONDS, SignalType
from pyboss.supervisor.control_wire import (COMMANDS, MAX_DEPTH, MAX_REQUEST, BadRequest,
                                            nesting_depth, parse_request)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | \
    st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) |
                           st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=30)


def depth(value):
    if isinstance(value, list):
        return 1 + max([depth(v) for v in value], default=0)
    if isinstance(value, dict):
        return 1 + max([depth(v) for v in value.values()], default=0)
    return 0


# -- the control-request parser ------------------------------------------------------------

@given(st.binary(max_size=2000))
def test_any_bytes_are_a_request_or_a_bad_request(line):
    try:
        request = parse_request(line)
    except BadRequest as e:
        assert str(e)
    else:
        assert request["command"] in COMMANDS


@given(json_values)
def test_nesting_depth_is_the_depth_of_the_json_value(value):
    assert nesting_depth(json.dumps(value).encode(), limit=1000) == depth(value)


@given(json_values)
def test_deep_or_long_requests_are_refused_before_json_parses_them(value):
    line = json.dumps({"command": "status", "x": value}).encode()
    try:
        parse_request(line)
    except BadRequest:
        assert depth(value) + 1 > MAX_DEPTH or len(line) > MAX_REQUEST
    else:
        assert depth(value) + 1 <= MAX_DEPTH


@given(st.integers(min_value=MAX_DEPTH + 1, max_value=200_000), st.sampled_from("[{"))
def test_any_pile_of_brackets_is_refused_without_recursion(count, bracket):
    with pytest.raises(BadRequest):
        parse_request(bracket.encode() * count)


@given(st.sampled_from(COMMANDS), st.booleans(),
       st.dictionaries(st.text(max_size=10), json_scalars, max_size=3))
def test_valid_requests_parse_to_themselves(command, wait, extra):
    request = dict(extra, command=command, wait=wait)
    assert parse_request(json.dumps(request).encode()) == request


# -- the listen-spec parser -------------------------------------------------------------------

@given(st.text(max_size=60))
def test_any_text_is_a_listen_spec_or_a_listen_error(text):
    try:
        spec = parse_spec(text, "listen0")
    except ListenError as e:
        assert str(e)
    else:
        assert spec.kind in ("tcp", "udp", "unix")
        assert spec.kind == "unix" or 0 <= spec.port <= 65535


@given(st.sampled_from(["", ":", "127.0.0.1:", "[::1]:", "udp://:"]),
       st.text(alphabet=st.characters(categories=["Nd", "No"]), min_size=1, max_size=6))
def test_ports_in_any_digits_are_ascii_numbers_or_refused(prefix, port):
    """'²' is a digit to str.isdigit() but not to int(); '٣' is not a port anyone writes."""
    try:
        spec = parse_spec(prefix + port, "listen0")
    except ListenError:
        assert not (port.isascii() and port.isdigit() and int(port) <= 65535)
    else:
        assert port.isascii() and spec.port == int(port)


ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: "%d.%d.%d.%d" % t)
ipv6 = st.sampled_from(["::1", "::", "fe80::1", "2001:db8::42"])
names = st.text(alphabet=string.ascii_letters + string.digits + "_.-", min_size=1, max_size=20)


@given(names, st.sampled_from(["tcp", "udp"]), ipv4 | ipv6 | st.just(""),
       st.integers(0, 65535))
def test_a_spec_parses_back_from_its_own_text(name, kind, host, port):
    spec = ListenSpec(name, kind, host=host, port=port)
    assert parse_spec("%s=%s" % (name, spec), "listen0") == spec


@given(names, st.text(alphabet=string.ascii_letters + string.digits + "/_.-", min_size=1,
                      max_size=40))
def test_a_unix_spec_keeps_its_absolute_path(name, tail):
    spec = parse_spec("%s=unix:/%s" % (name, tail), "listen0")
    assert (spec.name, spec.kind) == (name, "unix")
    assert spec.path.startswith("/")


# -- the notify-message parser ---------------------------------------------------------------

@given(st.binary(max_size=4096))
def test_any_datagram_parses_to_text_fields(data):
    fields = sd.parse_message(data)
    assert all(isinstance(k, str) and k and "\n" not in k and "=" not in k for k in fields)
    assert all(isinstance(v, str) and "\n" not in v for v in fields.values())


notify_keys = st.text(alphabet=string.ascii_uppercase + "_", min_size=1, max_size=20)
notify_values = st.text(max_size=40).filter(lambda v: "\n" not in v)


@given(st.dictionaries(notify_keys, notify_values, max_size=8))
def test_a_notify_message_parses_back_to_its_fields(fields):
    message = "\n".join("%s=%s" % item for item in fields.items())
    assert sd.parse_message(message.encode()) == fields


# -- option validation ----------------------------------------------------------------------

@given(st.text(max_size=30) | st.floats().map(repr) | st.integers().map(str))
def test_seconds_are_finite_and_in_range_or_refused(text):
    try:
        value = values.seconds(text)
    except ValueError as e:
        assert "is not a number of seconds from 0 to %d" % values.MAX_SECONDS in str(e)
    else:
        assert math.isfinite(value) and 0 <= value <= values.MAX_SECONDS


@given(st.floats(min_value=0, max_value=values.MAX_SECONDS))
def test_seconds_in_range_are_taken_as_written(value):
    assert values.seconds(repr(value)) == value


@given(st.text(max_size=12) | st.integers(-100, 100).map(str))
def test_signals_are_nameable_and_catchable_or_refused(text):
    try:
        number = values.signal_number(text)
    except ValueError as e:
        assert str(e)
    else:
        assert signal.Signals(number).name.startswith("SIG")
        assert number not in (signal.SIGKILL, signal.SIGSTOP)


@given(st.sampled_from([s for s in signal.Signals
                        if s not in (signal.SIGKILL, signal.SIGSTOP)]),
       st.sampled_from([str.upper, str.lower, lambda n: n[3:], lambda n: n[3:].lower()]))
def test_every_catchable_signal_is_accepted_by_any_of_its_names(signum, spelling):
    assert values.signal_number(spelling(signum.name)) == signum
    assert values.signal_number(str(int(signum))) == signum


@settings(max_examples=50)
@given(st.text(max_size=20))
def test_option_types_fail_only_as_click_errors(text):
    for option_type in (SECONDS, SignalType()):
        try:
            option_type.convert(text, None, None)
        except click.BadParameter:
            pass
