"""A live request to an origin that cannot answer is bounded end to end.

The origin is a real process whose request server runs on a thread, while its
main thread sits in C code holding the GIL (``sum`` over a huge range never
lets go of it): the kernel accepts the connection, but nothing answers the
handshake. Asking it must fail with ``OriginError`` naming the origin and the
path within the request timeout (plus a second of slack), not hang.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

from runtime.transport import LiveOrigins, OriginError, socket_path

BUSY_ORIGIN = textwrap.dedent(
    """
    import sys, time
    from runtime.transport import Server
    Server(sys.argv[1], b"key", lambda op, path: None)
    print("serving", flush=True)
    time.sleep(0.2)   # the server thread is waiting in accept()
    sum(range(10**13))  # then hold the GIL for good
    """
)
TIMEOUT = 2.0


@pytest.mark.parametrize("op", ["snapshot", "exists"])
def test_an_origin_holding_the_gil_fails_within_the_timeout(tmp_path, op):
    address = socket_path(str(tmp_path), "root.busy")
    origin = subprocess.Popen(
        [sys.executable, "-c", BUSY_ORIGIN, address], stdout=subprocess.PIPE, text=True
    )
    try:
        assert origin.stdout.readline().strip() == "serving"
        time.sleep(0.5)  # now inside sum(), GIL held
        asker = LiveOrigins(str(tmp_path), b"key", timeout=TIMEOUT)
        outcome: list[BaseException | None] = []

        def ask() -> None:
            try:
                getattr(asker, op)("root.busy", "outputs/ckpt")
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - the outcome is the result
                outcome.append(exc)

        started = time.monotonic()
        thread = threading.Thread(target=ask, daemon=True)
        thread.start()
        thread.join(TIMEOUT + 30)  # a hang is reported, not waited out
        elapsed = time.monotonic() - started
        print(f"\nbusy origin: {op} ended after {elapsed:.1f} s: {outcome}")
        assert outcome, f"{op} was still blocked after {elapsed:.0f} s"
        assert isinstance(outcome[0], OriginError)
        assert "root.busy" in str(outcome[0]) and "outputs/ckpt" in str(outcome[0])
        assert elapsed < TIMEOUT + 1
    finally:
        origin.kill()
        origin.wait()
