"""The backend's container image, built from Debian packages (no registry is reachable here).

The root file system is assembled from `apt-get download`ed .debs, cached as a tarball in
.lab/cache, and imported once into a read-only image store that every lab host shares
(podman's `additionalimagestores`), so a host never imports it again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from lab.errors import LabError

PACKAGES = ["python3", "python3-websockets", "coreutils", "dash"]
# Pulled in by dependency chains, never used by the backend: keep the image small.
EXCLUDE = {
    "dpkg", "install-info", "perl", "perl-base", "perl-modules-5.36", "libperl5.36", "mailcap",
    "mime-support", "libgdbm-compat4", "libdb5.3", "tar", "debianutils",
}
BACKEND = Path(__file__).parent / "backend" / "server.py"
IMAGE_REPO = "localhost/wsguard-lab-backend"


def _run(cmd: list[str], **kw: object) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise LabError(f"{' '.join(cmd[:3])} failed: {proc.stderr.strip()[-800:]}")
    return str(proc.stdout)


def package_closure() -> list[str]:
    out = _run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                "--no-breaks", "--no-replaces", "--no-enhances", *PACKAGES])
    names = {line.strip() for line in out.splitlines() if line and line[0].isalnum()}
    return sorted(names - EXCLUDE)


def image_tag() -> str:
    """Content-addressed: a changed backend or package list makes a new image, never a stale one."""
    h = hashlib.sha256(BACKEND.read_bytes())
    h.update(" ".join(PACKAGES).encode())
    return h.hexdigest()[:12]


def image_ref() -> str:
    return f"{IMAGE_REPO}:{image_tag()}"


def build_rootfs_tar(cache: Path) -> Path:
    """The image's root file system as a tarball; cached, so only the first build downloads."""
    tar_path = cache / f"rootfs-{image_tag()}.tar"
    if tar_path.exists():
        return tar_path
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    names = package_closure()
    missing = [n for n in names if not list(debs.glob(f"{n}_*.deb"))]
    if missing:
        try:
            _run(["apt-get", "download", *missing], cwd=debs)
        except LabError as exc:
            raise LabError(str(exc), hint="run `apt-get update` once, then `invoke lab.up` again") from exc
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        root = Path(tmp) / "rootfs"
        (root / "usr").mkdir(parents=True)
        for d in ("bin", "sbin", "lib", "lib64"):  # merged /usr, as bookworm
            (root / "usr" / d).mkdir(exist_ok=True)
            (root / d).symlink_to(f"usr/{d}")
        for name in names:
            deb = sorted(debs.glob(f"{name}_*.deb"))[-1]
            subprocess.run(f"dpkg-deb --fsys-tarfile {deb} | tar -x --keep-directory-symlink -C {root}",
                           shell=True, check=True)  # noqa: S602 - paths are ours
        etc = root / "etc"
        etc.mkdir(exist_ok=True)
        (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/sh\n")
        (etc / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
        (root / "tmp").mkdir(mode=0o1777, exist_ok=True)
        (root / "app").mkdir()
        shutil.copy(BACKEND, root / "app" / "server.py")
        _run(["ldconfig", "-r", str(root)])
        part = tar_path.with_suffix(".part")
        with tarfile.open(part, "w") as tf:
            tf.add(root, arcname=".")
        os.replace(part, tar_path)
    return tar_path


def ensure_image(cache: Path, store: Path) -> str:
    """Import the image into the shared store unless that exact tag is already there."""
    ref = image_ref()
    podman = ["podman", "--root", str(store / "storage"), "--runroot", str(store / "run"),
              "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
    if subprocess.run([*podman, "image", "exists", ref], capture_output=True).returncode == 0:
        return ref
    tar_path = build_rootfs_tar(cache)
    _run([*podman, "import", "--change", 'CMD ["python3", "-u", "/app/server.py"]', str(tar_path), ref])
    return ref
