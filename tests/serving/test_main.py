"""``python -m serving``: flags, errors as one line with exit 2, and a real start → answer → SIGTERM."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from serving.__main__ import main, parse_options
from tests.serving.conftest import copy_run, publish_index, tiny_run

ROOT = Path(__file__).resolve().parents[2]


def test_parse_options_reads_yaml_values():
    assert parse_options(["max_batch=32", "reload_interval_s=null", "max_wait_ms=0.5"]) == \
        {"max_batch": 32, "reload_interval_s": None, "max_wait_ms": 0.5}
    with pytest.raises(ValueError, match="--set expects KEY=VALUE, got 'max_batch'"):
        parse_options(["max_batch"])


def test_errors_are_one_line_with_exit_2(tmp_path, capsys):
    assert main(["--run", str(tmp_path / "missing")]) == 2
    assert "serving: error:" in capsys.readouterr().err
    assert main(["--run", str(tiny_run().root), "--set", "max_bach=3"]) == 2
    assert "unknown config key(s) ['serving.max_bach']" in capsys.readouterr().err
    run = copy_run(tmp_path)
    publish_index(run, model_version="other-model")
    assert main(["--run", str(run.root), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "'other-model'" in err and run.model_version() in err and "twotower rebuild --run" in err


def test_a_busy_port_fails_in_one_line_before_the_model_is_loaded(tmp_path, capsys):
    # issue 13 item 5: a traceback after ~20 s of model loading. The run does not even exist here: the port
    # is checked first, so the error is about the port, not the run.
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        assert main(["--run", str(tmp_path / "no-such-run"), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert re.search(rf"cannot listen on 127.0.0.1:{port}: the port is already in use; stop the process using it or "
                     r"pass another --port \(0 = any free port\)", err), err
    assert time.monotonic() - started < 10


@pytest.mark.slow
def test_module_entry_point_serves_and_stops_on_sigterm():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "serving", "--run", str(tiny_run().root), "--port", "0",
                             "--set", "reload_interval_s=null"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url, lines = None, []
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            match = re.search(r"listening on (http://\S+)", line)
            url = match.group(1) if match else None
        assert url, "".join(lines)
        with urllib.request.urlopen(url + "/healthz", timeout=30) as r:
            assert json.loads(r.read())["status"] == "ok"
        request = urllib.request.Request(url + "/topk", data=json.dumps({"user_id": "u1", "k": 3}).encode())
        with urllib.request.urlopen(request, timeout=30) as r:
            assert len(json.loads(r.read())["items"]) == 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert "shutting down" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
