#!/usr/bin/env bash
# The main job on the lab, from nothing: install, bring up production-like hosts, show the disconnect,
# diagnose it, fix it (rate limiter, then nginx), verify, probe again, and roll one host back.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
INV=.lab/inventory.yml
inv() { .venv/bin/invoke "$@"; }
step() {
  printf '\n\033[1m$ invoke %s\033[0m\n' "$*"
  inv "$@"
  local rc=$?
  echo "(exit $rc)"
  return 0
}
export WSGUARD_LAB_ID=0
# Profile stock: nginx's read timeout is 5 s there (standing for its 60 s default), so the idle drop
# shows in seconds.
step lab.up --hosts 3 --profile stock
inv lab.reset >/dev/null                    # every host back to the incident's state
step probe --inventory $INV --limit lab1 --stream 30 --idle 7 --duration 4
step diagnose --inventory $INV --limit lab1
step fix-rate-limit --inventory $INV --check --diff --limit lab1
step fix-rate-limit --inventory $INV
step probe --inventory $INV --limit lab1 --stream 30 --idle 7 --duration 12
step fix-nginx --inventory $INV --check --diff --limit lab1
step fix-nginx --inventory $INV
step verify --inventory $INV
step probe --inventory $INV --limit lab1 --stream 30 --idle 7 --duration 12
step history --inventory $INV --limit lab1
step rollback --inventory $INV --limit lab1
step verify --inventory $INV --limit lab1
echo
echo "The lab is still up: try \`.venv/bin/invoke --list\`, or \`.venv/bin/invoke lab.down\` to remove it."
