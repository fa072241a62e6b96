"""Start-up detection in conftest.Server: lines before the listening line, and a server that
exits before listening."""
import os
import stat

import pytest
import requests

from conftest import SERVER_BIN, Server


def wrapper(tmp_path, body):
    path = tmp_path / "server.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_lines_before_listening_line_are_skipped(tmp_path):
    # As a Redis warning printed before the listening line did (issue 11).
    binary = wrapper(tmp_path, 'echo "[warning] redis: connection refused"\necho\n'
                               f'exec "{os.path.abspath(SERVER_BIN)}" "$@"\n')
    s = Server(binary=binary)
    try:
        assert requests.get(s.url + "/health", timeout=10).status_code == 200
        assert s.output[0].startswith("[warning] redis")
    finally:
        assert s.stop() == 0


def test_exit_before_listening_is_reported(tmp_path):
    binary = wrapper(tmp_path, 'echo "error: no models"\nexit 3\n')
    with pytest.raises(RuntimeError, match=r"exited with 3 before listening.*no models"):
        Server(binary=binary)
