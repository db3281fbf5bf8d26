"""Programs that run ON a host (stdlib only, Python 3.7+), all shipped by one bootstrap.

`python3 -I -c BOOT LEN ...` reads the program's source (LEN bytes) off stdin and runs it; whatever the
program reads next on stdin is its request. Nothing is written to the host's disk to run them.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_BOOT = "import sys;exec(compile(sys.stdin.buffer.read(int(sys.argv[1])),'wsguard-{name}','exec'))"


@cache
def source(name: str) -> bytes:
    """The source of programs/NAME.py (agent, upgrade_probe)."""
    return (Path(__file__).parent / f"{name}.py").read_bytes()


def boot(name: str) -> str:
    return _BOOT.format(name=name)


def argv(name: str, src: bytes) -> list[str]:
    """The command that runs the program whose source `src` comes first on stdin."""
    return ["python3", "-I", "-c", boot(name), str(len(src))]
