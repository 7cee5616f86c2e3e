"""The suite runs with the network cut (README's test command), and workers run ultralytics offline."""

from __future__ import annotations

import os
import socket
import pytest


@pytest.mark.skipif(os.environ.get("YTM_TESTS_OFFLINE") != "1", reason="run through scripts/offline (make test)")
def test_the_network_is_really_unreachable():
    with socket.socket() as s:
        s.settimeout(3)
        assert s.connect_ex(("1.1.1.1", 443)) != 0

