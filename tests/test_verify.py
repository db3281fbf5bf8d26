"""`invoke verify` end to end on the lab (issue 8): controls, reports, exit codes, trust, secrets."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from conftest import REPO, Lab

APP = "/opt/wealth-coach-ai"
ENV = f"{APP}/.env"
ALL = ["env-flags", "runtime-env", "nginx-directives", "nginx-loaded", "nginx-config-valid", "nginx-running",
       "backend-running", "ws-upgrade"]


def verify(lab: Lab, *args: str, inventory: str | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return lab.invoke("verify", "--inventory", inventory or lab.inventory, *args, env=env)


def verify_json(lab: Lab, *args: str, inventory: str | None = None,
                env: dict[str, str] | None = None) -> tuple[int, dict]:
    r = verify(lab, "--json", *args, inventory=inventory, env=env)
    assert r.stdout.startswith("{"), r.stdout + r.stderr
    return r.returncode, json.loads(r.stdout)


def statuses(host: dict) -> dict[str, str]:
    return {c["id"]: c["status"] for c in host["controls"]}


def no_secrets(lab: Lab, *texts: str) -> None:
    for t in texts:
        assert lab.token not in t and lab.secret not in t and lab.sudo_password not in t


def fix_all(lab: Lab, limit: str) -> None:
    for t in ("fix-rate-limit", "fix-nginx"):
        r = lab.invoke(t, "--inventory", lab.inventory, "--limit", limit)
        assert r.returncode == 0, r.stdout + r.stderr


def test_fresh_lab_drifts_on_flags_and_directives(lab: Lab) -> None:
    lab.reset("lab1", "lab2")  # a kept lab (WSGUARD_KEEP_LAB) may hold an earlier run's fixes
    code, doc = verify_json(lab, "--limit", "lab1,lab2")
    assert code == 2 and doc["task"] == "verify" and doc["exit_code"] == 2, doc
    for h in doc["hosts"]:
        s = statuses(h)
        assert list(s) == ALL
        assert h["status"] == "changed"
        assert {k for k, v in s.items() if v == "fail"} == {"env-flags", "runtime-env", "nginx-directives"}, s
        assert {k for k, v in s.items() if v == "pass"} == set(ALL) - {"env-flags", "runtime-env", "nginx-directives"}
        flags = next(c for c in h["controls"] if c["id"] == "env-flags")
        assert flags["expected"] == {"WS_RATE_LIMIT_ENABLED": "false", "WS_MAX_MESSAGES_PER_MINUTE": "1000"}
        assert flags["actual"] == {"WS_RATE_LIMIT_ENABLED": None, "WS_MAX_MESSAGES_PER_MINUTE": None}
        directives = next(c for c in h["controls"] if c["id"] == "nginx-directives")
        assert "proxy_socket_keepalive on" in directives["actual"]["missing"]
        assert h["round_trips"] <= 2  # facts (its nginx -T tests the config too), the upgrade on the host
        assert set(h["controls"][0]) >= {"id", "title", "impact", "status", "expected", "actual"}
    no_secrets(lab, json.dumps(doc))


def test_after_the_fixes_every_control_passes_and_reports_parse(clean: Lab, tmp_path: Path) -> None:
    lab = clean
    fix_all(lab, "lab1,lab2")
    junit, prom = tmp_path / "verify.xml", tmp_path / "wsguard.prom"
    r = verify(lab, "--limit", "lab1,lab2", "--probe", "--probe-idle", "3", "--report", "table",
               "--report", f"junit:{junit}", "--report", f"prometheus:{prom}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "lab1: compliant" in r.stdout and "lab2: compliant" in r.stdout
    assert re.search(r"RECAP verify .* compliant=2 drift=0 error=0 unreachable=0; .*exit 0", r.stdout)
    # JUnit: one testcase per host x control, nothing failed.
    root = ET.parse(junit).getroot()  # noqa: S314 - our own report
    cases = root.findall(".//testcase")
    assert len(cases) == 2 * (len(ALL) + 1) == int(root.get("tests", -1))
    assert root.get("failures") == root.get("errors") == root.get("skipped") == "0"
    assert {c.get("name") for c in cases} == {*ALL, "ws-probe"}
    # Prometheus: parses, one gauge per host x control, hosts compliant.
    from prometheus_client.parser import text_string_to_metric_families

    fams = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    passed = fams["wsguard_control_passed"].samples
    assert len(passed) == 2 * (len(ALL) + 1) and all(s.value == 1 for s in passed)
    assert {s.labels["impact"] for s in passed} <= {"low", "medium", "high"}
    assert [s.value for s in fams["wsguard_host_compliant"].samples] == [1, 1]
    assert fams["wsguard_hosts_unreachable"].samples[0].value == 0
    assert fams["wsguard_verify_timestamp_seconds"].samples[0].value > 1.6e9
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left behind
    no_secrets(lab, r.stdout, r.stderr, junit.read_text(), prom.read_text())


def test_env_edited_back_by_hand_is_drift_naming_the_control(clean: Lab, tmp_path: Path) -> None:
    lab = clean
    fix_all(lab, "lab1")
    lab.sh("lab1", f"sed -i 's/^WS_RATE_LIMIT_ENABLED=.*/WS_RATE_LIMIT_ENABLED=true/' {ENV}")
    out = tmp_path / "verify.json"
    r = verify(lab, "--limit", "lab1", "--report", "table:-", "--report", f"json:{out}")
    assert r.returncode == 2, r.stdout + r.stderr
    block = r.stdout[r.stdout.index("FAIL  env-flags"):]
    assert "expected: WS_RATE_LIMIT_ENABLED=false" in block and "actual:   WS_RATE_LIMIT_ENABLED=true" in block
    doc = json.loads(out.read_text())
    s = statuses(doc["hosts"][0])
    assert s["env-flags"] == "fail" and s["runtime-env"] == "pass" and doc["exit_code"] == 2
    no_secrets(lab, r.stdout, r.stderr, out.read_text())


def test_env_right_but_container_stale_fails_runtime_env(clean: Lab) -> None:
    lab = clean
    lab.sh("lab1", f"printf 'WS_RATE_LIMIT_ENABLED=false\\nWS_MAX_MESSAGES_PER_MINUTE=1000\\n' >> {ENV} && "
                   f"cd {APP} && docker-compose restart backend >/dev/null 2>&1")
    code, doc = verify_json(lab, "--limit", "lab1")
    h = doc["hosts"][0]
    s = statuses(h)
    assert code == 2 and s["env-flags"] == "pass" and s["runtime-env"] == "fail", s
    rt = next(c for c in h["controls"] if c["id"] == "runtime-env")
    assert rt["actual"] == {"WS_RATE_LIMIT_ENABLED": None, "WS_MAX_MESSAGES_PER_MINUTE": None}
    assert "not recreated" in rt["detail"]
    no_secrets(lab, json.dumps(doc))


def test_unreachable_host_is_an_error_and_the_other_is_checked(clean: Lab, tmp_path: Path) -> None:
    lab = clean
    prom = tmp_path / "wsguard.prom"
    r = lab.invoke("lab.fault", "lab2", "blackhole")
    assert r.returncode == 0, r.stderr
    try:
        r = verify(lab, "--limit", "lab1,lab2", "--json", "--connect-timeout", "2", "--timeout", "5",
                   "--report", f"prometheus:{prom}")
    finally:
        lab.invoke("lab.fault", "lab2", "restore")
    assert r.returncode == 1, r.stdout + r.stderr  # 1 wins over lab1's drift (2)
    doc = json.loads(r.stdout)
    lab1, lab2 = doc["hosts"]
    assert lab1["status"] == "changed" and statuses(lab1)["nginx-running"] == "pass"
    assert lab2["status"] == "unreachable" and set(statuses(lab2).values()) == {"error"}
    from prometheus_client.parser import text_string_to_metric_families

    fams = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    assert fams["wsguard_hosts_unreachable"].samples[0].value == 1


def test_changed_host_key_is_refused_by_the_controls(lab: Lab, tmp_path: Path) -> None:
    known = (Path(lab.inventory).parent / "ssh" / "known_hosts").read_text().splitlines()
    keys = {line.split(",")[0]: line.split(" ", 1)[1] for line in known}
    swapped = [line.split(" ", 1)[0] + " " + (keys["lab2"] if line.startswith("lab1,") else line.split(" ", 1)[1])
               for line in known]
    kh = tmp_path / "known_hosts"
    kh.write_text("\n".join(swapped) + "\n")
    inv = tmp_path / "inventory.yml"
    inv.write_text(re.sub(r"wsguard_known_hosts: .*", f"wsguard_known_hosts: {kh}", Path(lab.inventory).read_text()))
    code, doc = verify_json(lab, "--limit", "lab1", inventory=str(inv))
    h = doc["hosts"][0]
    assert code == 1 and h["error"]["kind"] == "host_key" and "CHANGED" in h["error"]["message"], h
    assert set(statuses(h).values()) == {"error"} and h["round_trips"] == 0
    # The pytest form trusts the host no more than the task does.
    xml = tmp_path / "junit.xml"
    p = subprocess.run([sys.executable, "-m", "pytest", "remediations/checks/controls", "--inventory", str(inv),
                        "--limit", "lab1", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    root = ET.parse(xml).getroot()  # noqa: S314 - pytest's own report
    assert sum(int(s.get("errors", 0)) for s in root.iter("testsuite")) == len(ALL)
    assert "CHANGED" in p.stdout


def test_password_sudo_user_reads_the_root_only_env_on_the_host(lab: Lab, tmp_path: Path) -> None:
    inv = tmp_path / "inventory.yml"
    text = Path(lab.inventory).read_text()
    inv.write_text(text.replace("ansible_user: root", "ansible_user: deploypw"))
    code, doc = verify_json(lab, "--limit", "lab1", inventory=str(inv))
    assert code == 1 and "ansible_become" in doc["hosts"][0]["error"]["message"]  # not root: said so, not guessed
    inv.write_text(text.replace("ansible_user: root", "ansible_user: deploypw\n    ansible_become: true"))
    code, doc = verify_json(lab, "--limit", "lab1", inventory=str(inv),
                            env={"WSGUARD_SUDO_PASSWORD": lab.sudo_password})
    s = statuses(doc["hosts"][0])
    assert code == 2 and s["ws-upgrade"] == "pass" and s["env-flags"] == "fail" and "error" not in s.values(), doc
    no_secrets(lab, json.dumps(doc))


def test_pytest_form_runs_against_the_lab(lab: Lab, tmp_path: Path) -> None:
    xml = tmp_path / "junit.xml"
    p = subprocess.run([sys.executable, "-m", "pytest", "remediations/checks/controls", "--inventory", lab.inventory,
                        "--limit", "lab1,lab2", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr  # the fresh lab drifts
    root = ET.parse(xml).getroot()  # noqa: S314 - pytest's own report
    suites = list(root.iter("testsuite"))
    assert sum(int(s.get("tests", 0)) for s in suites) == 2 * len(ALL)
    assert sum(int(s.get("failures", 0)) for s in suites) == 2 * 3
    assert sum(int(s.get("errors", 0)) for s in suites) == 0
    failed = {c.get("name") for c in root.iter("testcase") if c.find("failure") is not None}
    assert failed == {f"test_control[{h}-{c}]" for h in ("lab1", "lab2")
                      for c in ("env-flags", "runtime-env", "nginx-directives")}
    assert "expected: WS_RATE_LIMIT_ENABLED=false" in p.stdout
    no_secrets(lab, p.stdout, p.stderr, xml.read_text())


def test_bad_report_format_is_an_error_before_any_connection(lab: Lab) -> None:
    r = verify(lab, "--report", "yaml:-")
    assert r.returncode == 1 and "unknown report format" in r.stderr and not r.stdout
    r = verify(lab, "--json", "--report", "junit")
    assert r.returncode == 1 and "only one report can go to stdout" in r.stderr
