"""A no-op explains itself, per host, in text and JSON (evidence.nothing_to_do), with secrets masked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import Lab

ENV = "/opt/wealth-coach-ai/.env"
RATE_NOOP = ("WS_RATE_LIMIT_ENABLED=false, WS_MAX_MESSAGES_PER_MINUTE=1000 already set in "
             f"{ENV}; the container holds them")
NGINX_NOOP = "the 8 directives are in location /ws/; nginx runs the configuration on disk"


def run(lab: Lab, task: str, host: str, *args: str, inventory: str | None = None) -> tuple[int, str]:
    r = lab.invoke(task, "--inventory", inventory or lab.inventory, "--limit", host, *args)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, r.stdout


def host_doc(lab: Lab, task: str, host: str, inventory: str | None = None) -> dict[str, Any]:
    code, out = run(lab, task, host, "--json", inventory=inventory)
    assert code == 0, out
    h: dict[str, Any] = json.loads(out)["hosts"][0]
    return h


def block(out: str, host: str) -> list[str]:
    """The lines a host printed: its 'HOST: status' line and the indented ones under it."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{host}: "))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("  ")), len(lines))
    return lines[start:end]


def test_fix_rate_limit_no_op_says_why_in_json_and_text(clean: Lab) -> None:
    lab = clean
    first = host_doc(lab, "fix-rate-limit", "lab1")
    assert first["status"] == "changed" and "nothing_to_do" not in first["evidence"]
    again = host_doc(lab, "fix-rate-limit", "lab1")
    assert again["status"] == "ok" and again["evidence"]["nothing_to_do"] == [RATE_NOOP]
    code, out = run(lab, "fix-rate-limit", "lab1")
    assert code == 0 and block(out, "lab1") == ["lab1: ok", f"  {RATE_NOOP}"]
    code, out = run(lab, "fix-rate-limit", "lab1", "--check")
    assert code == 0 and block(out, "lab1") == ["lab1: ok", f"  {RATE_NOOP}"]


def test_fix_nginx_no_op_says_why_in_json_and_text(clean: Lab) -> None:
    lab = clean
    assert host_doc(lab, "fix-nginx", "lab2")["status"] == "changed"
    again = host_doc(lab, "fix-nginx", "lab2")
    assert again["status"] == "ok" and again["evidence"]["nothing_to_do"] == [NGINX_NOOP]
    code, out = run(lab, "fix-nginx", "lab2")
    assert code == 0 and block(out, "lab2") == ["lab2: ok", f"  {NGINX_NOOP}"]


def test_fix_says_why_for_the_part_with_nothing_to_do(clean: Lab) -> None:
    lab = clean
    assert host_doc(lab, "fix-nginx", "lab3")["status"] == "changed"
    # `fix`: the .env part changes, the nginx part has nothing to do and says so under the change.
    h = host_doc(lab, "fix", "lab3")
    assert h["status"] == "changed" and h["evidence"]["nothing_to_do"] == [NGINX_NOOP]
    code, out = run(lab, "fix", "lab3")
    assert code == 0 and block(out, "lab3") == ["lab3: ok", f"  {RATE_NOOP}", f"  {NGINX_NOOP}"]


def secret_flag_inventory(lab: Lab, tmp_path: Path) -> str:
    """The lab inventory with the backend's token among env_flags: a flag whose key looks secret."""
    text = Path(lab.inventory).read_text()
    assert "  vars:\n" in text
    flags = ("    env_flags:\n      WS_RATE_LIMIT_ENABLED: 'false'\n      WS_MAX_MESSAGES_PER_MINUTE: '1000'\n"
             f"      WS_AUTH_TOKEN: '{lab.token}'\n")
    inv = tmp_path / "inventory.yml"
    inv.write_text(text.replace("  vars:\n", "  vars:\n" + flags, 1))
    return str(inv)


def test_a_secret_flag_is_masked_in_the_reason(clean: Lab, tmp_path: Path) -> None:
    lab = clean
    inv = secret_flag_inventory(lab, tmp_path)
    assert host_doc(lab, "fix-rate-limit", "lab1", inventory=inv)["status"] == "changed"
    reason = (f"WS_RATE_LIMIT_ENABLED=false, WS_MAX_MESSAGES_PER_MINUTE=1000, WS_AUTH_TOKEN=*** already set in "
              f"{ENV}; the container holds them")
    code, out = run(lab, "fix-rate-limit", "lab1", "--json", inventory=inv)
    assert code == 0 and json.loads(out)["hosts"][0]["evidence"]["nothing_to_do"] == [reason]
    assert lab.token not in out and lab.secret not in out
    code, out = run(lab, "fix-rate-limit", "lab1", inventory=inv)
    assert code == 0 and block(out, "lab1") == ["lab1: ok", f"  {reason}"]
    assert lab.token not in out and lab.secret not in out


def test_rollback_with_nothing_to_undo_keeps_its_message(clean: Lab) -> None:
    lab = clean
    h = host_doc(lab, "rollback", "lab2")
    assert h["status"] == "ok" and "nothing_to_do" not in h["evidence"]
    assert h["warnings"] == ["nothing to roll back: no recorded run changed a file on this host"]
    code, out = run(lab, "rollback", "lab2")
    assert code == 0 and block(out, "lab2") == [
        "lab2: ok", "  warning: nothing to roll back: no recorded run changed a file on this host"]
