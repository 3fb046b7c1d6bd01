"""``python -m tests.serving.gated_serve RUN GATE_DIR [--set KEY=VALUE ...]``: the real ``python -m serving``
entry point (``serving.__main__.main``: signal handling, uvicorn, graceful shutdown) whose query tower holds
any batch that contains the user "hold": it writes GATE_DIR/entered, then waits (up to 60 s) until
GATE_DIR/open exists. Lets a test keep a request in flight in another process while it sends SIGTERM."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from serving.service import TopKService


class FileGatedEncoder:
    def __init__(self, encoder, gate: Path):
        self.encoder, self.gate = encoder, gate

    def __call__(self, features):
        if "hold" in list(features["user_id"]):
            (self.gate / "entered").write_text("1")
            deadline = time.monotonic() + 60
            while not (self.gate / "open").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        return self.encoder(features)


def main(argv: list[str]) -> int:
    run, gate, rest = argv[0], Path(argv[1]), argv[2:]
    opened = TopKService.open.__func__

    def open_gated(cls, *args, **kwargs):
        service = opened(cls, *args, **kwargs)
        service.encoder = FileGatedEncoder(service.encoder, gate)
        return service

    TopKService.open = classmethod(open_gated)
    from serving.__main__ import main as serving_main

    return serving_main(["--run", run, "--port", "0", *rest])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
