"""Third-party material for differential tests, read in place and never copied into the repository.

Two sources: the corpus beside the repository (configs and .env files from public repositories, each
named in its MANIFEST.tsv), and source distributions from the package registry, pinned by version and
sha256 and cached under .lab-cache/registry/ (downloaded once, verified every time).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".lab-cache" / "registry"


def corpus_dir() -> Path | None:
    """shared/corpus/third-party beside the repository (as CI lays it out), or $WSGUARD_THIRD_PARTY_CORPUS;
    None when neither exists (the tests that need it skip and say so)."""
    if os.environ.get("WSGUARD_THIRD_PARTY_CORPUS"):
        return Path(os.environ["WSGUARD_THIRD_PARTY_CORPUS"])
    for candidate in (REPO.parent / "shared" / "corpus" / "third-party", Path("/work/shared/corpus/third-party")):
        if candidate.is_dir():
            return candidate
    return None


def manifest(kind: str) -> list[dict[str, str]]:
    """MANIFEST.tsv rows of one kind ("nginx", "env", "envtests"): repo, commit, path, corpus_path, sha256."""
    root = corpus_dir()
    if root is None:
        return []
    lines = (root / "MANIFEST.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:] if line]
    return [r for r in rows if r["kind"] == kind]


def registry_file(requirement: str, filename: str, sha256: str, *, sdist: bool = True) -> Path:
    """A pinned file from the package registry (e.g. "gixy-next==0.9.0", "gixy_next-0.9.0.tar.gz"),
    downloaded with pip into the cache once; its sha256 is checked on every use."""
    path = CACHE / filename
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        name = requirement.split("==")[0]
        fmt = ["--no-binary", name] if sdist else ["--only-binary", ":all:"]
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *fmt, "-d", str(CACHE),
                            requirement], capture_output=True, text=True, timeout=600)
        if r.returncode != 0 or not path.exists():
            raise RuntimeError(f"could not download {requirement} from the package registry: {r.stderr.strip()}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        path.unlink()
        raise RuntimeError(f"{filename}: sha256 {digest}, pinned {sha256}; the download was removed, run again")
    return path


def unpacked(archive: Path) -> Path:
    """A registry tarball unpacked beside itself (once); returns its top directory."""
    dest = archive.parent / (archive.name.removesuffix(".tar.gz") + ".d")
    if not dest.is_dir():
        tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        tmp.rename(dest)
    (top,) = dest.iterdir()
    return top
