#!/usr/bin/env bash
# Installs what wsguard and its lab need on a Debian/Ubuntu machine, as root: system packages
# (sshd, nginx, podman + docker-compose, sudo, iptables...) and the project's venv in .venv/.
# Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "error: run as root (the lab creates namespaces and installs system packages)" >&2; exit 1
fi
if [ "$(uname -s)" != Linux ]; then
  echo "error: the lab needs Linux (network and mount namespaces)" >&2; exit 1
fi

PKGS="openssh-server openssh-client nginx-light sudo iptables iproute2 podman runc docker-compose
      python3-websockets python3-venv python3-dev curl ca-certificates systemd acl attr"
missing=""
for p in $PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"; done
command -v docker >/dev/null || missing="$missing docker.io"
if [ -n "$missing" ]; then
  echo "setup: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps the packages from starting their own daemons: the lab runs its own per host.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# The lab image is assembled from .debs: apt needs its lists once.
[ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ] || apt-get update -qq

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import fabric, invoke, dotenv, testinfra, crossplane, hypothesis" 
  touch .venv/.installed
fi
echo "setup: ready ($(.venv/bin/python --version), $(nginx -v 2>&1), $(podman --version))"
