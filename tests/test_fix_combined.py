"""`invoke fix`: both remediations as one transaction per host."""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import Lab
from remediations.fixes.combined import merge_requests

ENV = "/opt/wealth-coach-ai/.env"
SITE = "/etc/nginx/sites-available/api.wealthwarriorshub.test"


def test_merge_requests_unions_files_and_flags() -> None:
    merged = merge_requests([{"files": ["/a"], "container": "c", "journal": {}},
                             {"files": ["/b", "/a"], "nginx": True, "journal": {}}])
    assert merged == {"files": ["/a", "/b"], "container": "c", "journal": {}, "nginx": True}
    with pytest.raises(ValueError):
        merge_requests([{"container": "c"}, {"container": "d"}])


def sessions(lab: Lab, host: str) -> int:
    return lab.host(host).path("/var/log/sshd.log").read_text().count("Starting session:")


def test_fix_applies_both_in_two_round_trips_and_reruns_in_one(clean: Lab) -> None:
    lab = clean
    for expected_status, expected_trips in (("changed", 2), ("ok", 1)):
        before = sessions(lab, "lab1")
        r = lab.invoke("fix", "--inventory", lab.inventory, "--limit", "lab1", "--json")
        h = json.loads(r.stdout)["hosts"][0]
        assert r.returncode == 0 and h["status"] == expected_status, r.stdout
        assert h["round_trips"] == expected_trips == sessions(lab, "lab1") - before
    text = lab.host("lab1").path(SITE).read_text()
    assert "proxy_socket_keepalive on;" in text
    assert "WS_RATE_LIMIT_ENABLED=false" in lab.host("lab1").path(ENV).read_text()
    manifests = list(lab.host("lab1").path("/var/lib/wsguard/runs").glob("*/manifest.json"))
    assert len(manifests) == 1  # one run recorded both files, so one rollback undoes both
    m = json.loads(manifests[0].read_text())
    assert sorted(f["path"] for f in m["files"]) == sorted([ENV, "/etc/nginx/sites-enabled/api.wealthwarriorshub.test"])
    assert m["handlers_run"] == ["compose_recreate", "nginx_reload"]


def test_failed_nginx_t_restores_every_file_of_the_run(clean: Lab) -> None:
    lab = clean
    digest = {p: hashlib.sha256(lab.host("lab2").path(p).read_bytes()).hexdigest() for p in (ENV, SITE)}
    container = lab.sh("lab2", "docker inspect -f '{{.Id}}' wealth_coach_backend").stdout
    lab.sh("lab2", "echo 'not nginx;' > /etc/nginx/conf.d/broken.conf")
    r = lab.invoke("fix", "--inventory", lab.inventory, "--limit", "lab2", "--json")
    h = json.loads(r.stdout)["hosts"][0]
    assert r.returncode == 1 and h["error"]["kind"] == "validate"
    for p, d in digest.items():
        assert hashlib.sha256(lab.host("lab2").path(p).read_bytes()).hexdigest() == d, p
    assert lab.sh("lab2", "docker inspect -f '{{.Id}}' wealth_coach_backend").stdout == container
