"""The suite runs with the network cut (README's test command), and workers run ultralytics offline."""

from __future__ import annotations

import os
import socket

import pytest


def test_the_network_is_really_unreachable():
    if os.environ.get("YTM_TESTS_OFFLINE") != "1":
        if os.environ.get("CI"):
            pytest.fail("CI must run the suite through scripts/offline (make test)")
        pytest.skip("run through scripts/offline (make test) to cut the network")
    with socket.socket() as s:
        s.settimeout(3)
        assert s.connect_ex(("1.1.1.1", 443)) != 0
