"""remediations.model.masking and remediations.edit.secrets (pure): what each remediation's diff, verify's
report, the compliance history, the webhook body and the probe's URL show of a secret: nothing. Real planners
and the real diff on in-memory facts; the third-party .env corpus (read in place) for real-world spellings.
"""

from __future__ import annotations

import ast
import base64
import csv
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from dotenv import dotenv_values
from hypothesis import given, settings
from hypothesis import strategies as st

from remediations.checks import compliance, webhook
from remediations.checks.controls.catalog import CONTROLS, Context, VerifyOptions, learn_secrets, run_control
from remediations.checks.probe import token_refusal
from remediations.edit.secrets import learn_env_text, learn_nginx, nginx_secrets
from remediations.fixes.nginx import NginxFix
from remediations.fixes.plan import FileChange
from remediations.fixes.ratelimit import RateLimitFix
from remediations.model.facts import Facts
from remediations.model.inventory import Host, WsVars
from remediations.model.masking import MASK, MIN_LEN, Masker, is_secret_key
from remediations.model.results import HostResult, RunResult

ENV = "/opt/app/.env"
SITE = "/etc/nginx/sites-enabled/app"


def _corpus() -> Path:
    """The third-party corpus: shared/ beside the repository (never copied into it), or where the env says."""
    if os.environ.get("WSGUARD_THIRD_PARTY_CORPUS"):
        return Path(os.environ["WSGUARD_THIRD_PARTY_CORPUS"])
    beside = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "third-party"
    return beside if beside.is_dir() else Path("/work/shared/corpus/third-party")


CORPUS = _corpus()

PEM_LINES = ["-----BEGIN PRIVATE KEY-----", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7",
             "VJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNb", "-----END PRIVATE KEY-----"]


def host(**ws: Any) -> Host:
    return Host(name="h1", address="10.0.0.1", port=22, user="root", key_file=None, become=False,
                groups=("all",), vars={}, ws=WsVars(app_dir="/opt/app", nginx_site=SITE, **ws))


def file_fact(path: str, text: str) -> dict[str, Any]:
    data = text.encode()
    return {"path": path, "exists": True, "content": base64.b64encode(data).decode(),
            "sha256": hashlib.sha256(data).hexdigest(), "resolved": path}


def nginx_facts(site: str) -> dict[str, Any]:
    return {"installed": True, "version": "nginx version: nginx/1.22.1", "test_ok": True, "master": None,
            "dump": f"# configuration file {SITE}:\n{site}\n"}


def shown(change: FileChange, masker: Masker) -> str:
    return change.diff(masker)


# -- the masker's rules ------------------------------------------------------------------------------

def test_known_values_and_query_parameters_masked_short_values_not() -> None:
    m = Masker(["s3cr3t-value", "abc"])
    assert m("x s3cr3t-value y abc") == f"x {MASK} y abc"
    assert m("GET /ws?token=t0k3n&page=2") == f"GET /ws?token={MASK}&page=2"


def test_each_line_of_a_multi_line_value_is_a_secret() -> None:
    m = Masker()
    m.add_env({"PRIVATE_KEY": "\n".join(PEM_LINES), "LOG_LEVEL": "visible-value"})
    for line in PEM_LINES:
        assert line not in m(f"+{line}\n-{line}\n")
    assert "visible-value" in m("visible-value")


@pytest.mark.parametrize(("url", "shown"), [
    ("wss://user:p4ssw0rd-x@api.example.com/ws/chat", "wss://***@api.example.com/ws/chat"),
    ("wss://tok3n-as-user-x@api.example.com/ws/chat", "wss://***@api.example.com/ws/chat"),
    ("ws://h/ws?access_token=p4ssw0rd-x&page=2", "ws://h/ws?access_token=***&page=2"),
    ("ws://h/ws?apikey=p4ssw0rd-x", "ws://h/ws?apikey=***"),
    ("ws://h/ws?X-Amz-Signature=p4ssw0rd-x&X-Amz-Date=20250101", "ws://h/ws?X-Amz-Signature=***&X-Amz-Date=20250101"),
    ("ws://h/ws?jwt=p4ssw0rd-x", "ws://h/ws?jwt=***"),
    ("ws://h/ws?sig=p4ssw0rd-x", "ws://h/ws?sig=***"),
    ("ws://h:8000/ws/chat?room=42", "ws://h:8000/ws/chat?room=42"),
])
def test_url_credentials_masked_and_the_rest_kept(url: str, shown: str) -> None:
    assert Masker()(url) == shown


def test_secret_key_names() -> None:
    assert all(map(is_secret_key, ["API_TOKEN", "Authorization", "X-Api-Key", "$api_key", "DB_PASSWORD"]))
    assert not any(map(is_secret_key, ["WS_RATE_LIMIT_ENABLED", "Host", "X-Forwarded-For", "Upgrade"]))


# -- .env: escaped quotes, multi-line values, the file as written ---------------------------------------

ENV_TEXT = (
    "# app\n"
    'API_SECRET="esc\\"aped-s3cret\\\\x"\n'
    "PRIVATE_KEY=\"" + "\n".join(PEM_LINES) + "\"\n"
    "export SINGLE_TOKEN='multi\nline-t0ken-value'\n"
    "WS_RATE_LIMIT_ENABLED=true\n"
    "DB_PASSWORD=plain-passw0rd # a note\n"
)


def written_secrets() -> list[str]:
    return ['esc\\"aped-s3cret\\\\x', 'esc"aped-s3cret\\x', *PEM_LINES, "multi", "line-t0ken-value",
            "plain-passw0rd"]


def test_env_file_values_masked_as_written_every_line() -> None:
    m = Masker()
    learn_env_text(m, ENV_TEXT)
    diff = shown(FileChange(ENV, ENV_TEXT.encode(), b"", "x"), m)
    for secret in written_secrets():
        if len(secret) >= MIN_LEN:
            assert secret not in diff, secret
    assert "-WS_RATE_LIMIT_ENABLED=true" in diff and "-DB_PASSWORD=*** # a note" in diff


def test_parsed_values_alone_leave_escaped_spellings_visible() -> None:
    """Why add_env_text exists: python-dotenv's value of an escaped string is not what the diff shows."""
    m = Masker()
    m.add_env(dotenv_values(stream=io.StringIO(ENV_TEXT), interpolate=False))
    assert 'esc\\"aped-s3cret' in shown(FileChange(ENV, ENV_TEXT.encode(), b"", "x"), m)


def test_env_file_that_does_not_parse_is_still_masked() -> None:
    text = "A=1\nAPI_TOKEN='unterminated-t0ken-value\nB=2\n"
    m = Masker()
    learn_env_text(m, text)
    assert "unterminated-t0ken-value" not in m(text)


def rate_limit_plan(text: str, flags: dict[str, str]) -> tuple[str, list[str], Masker]:
    m = Masker()
    h = host(env_flags=flags)
    plan = RateLimitFix(h).plan(Facts.parse({"files": [file_fact(ENV, text)], "container": {"exists": False}}), m)
    return "".join(f.diff(m) for f in plan.changed_files), plan.warnings, m


def test_token_rotation_in_env_flags_masked_in_the_diff() -> None:
    flags = {"API_TOKEN": "n3w-t0ken-from-inventory", "API_SECRET": 'new "quoted\\ s3cret', "WS_X": "on"}
    diff, _, _ = rate_limit_plan(ENV_TEXT + "API_TOKEN=0ld-t0ken-on-host\n", flags)
    for secret in ["n3w-t0ken-from-inventory", 'new "quoted\\ s3cret', 'new \\"quoted\\\\ s3cret',
                   "0ld-t0ken-on-host", *written_secrets()]:
        if len(secret) >= MIN_LEN:
            assert secret not in diff, secret
    assert "+API_TOKEN=***" in diff and "+WS_X=on" in diff  # an ordinary flag stays readable


# -- nginx: every task's diff of the site -------------------------------------------------------------

SITE_TEXT = """server {
    listen 80;
    proxy_set_header Authorization "Bearer s1te-bearer-t0ken";
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;

    location /ws/ {
        proxy_pass http://127.0.0.1:8000;
        set $api_key "s1te-api-key-value";
        auth_basic off;
        auth_basic_user_file /etc/nginx/htpasswd-s1te-file;
        # proxy_set_header X-Api-Key 'commented-s1te-key';
        map_hash_bucket_size 64;
    }
}
"""
SITE_SECRETS = ["Bearer s1te-bearer-t0ken", "s1te-bearer-t0ken", "s1te-api-key-value", "htpasswd-s1te-file",
                "commented-s1te-key"]


def test_nginx_secret_arguments_found() -> None:
    found = set(nginx_secrets(SITE_TEXT))
    assert set(SITE_SECRETS) - {"htpasswd-s1te-file"} <= found
    assert "/etc/nginx/htpasswd-s1te-file" in found
    assert not {"http://127.0.0.1:8000", "$proxy_add_x_forwarded_for", "64", "off"} & found


@pytest.mark.parametrize(("text", "secret"), [
    ('more_set_headers "X-Auth-Token: h3ader-t0ken";', None),  # one word: no value after it
    ("add_header X-Api-Key 'k3y-single-quoted' always;", "k3y-single-quoted"),
    ('fastcgi_param DB_PASSWORD "fcgi-passw0rd";', "fcgi-passw0rd"),
    ("env API_TOKEN=env-t0ken-value;", "env-t0ken-value"),
    ("secure_link_secret l1nk-secret-word;", "l1nk-secret-word"),
    ('map $http_x_api_key $client { default ""; "m4p-key-value" one; }', "m4p-key-value"),
    ('proxy_set_header Cookie "session=c00kie-value";', "session=c00kie-value"),
    ('proxy_set_header Authorization "Bearer esc\\"aped-t0ken";', 'Bearer esc\\"aped-t0ken'),
    # not lexable by wsguard (a ')' right after a quote): one directive per line then
    ('if ($a = "b") { proxy_set_header Authorization "Basic dXNlcjpw4ss"; }\n'
     'proxy_set_header Authorization "Basic dXNlcjpw4ss";', "dXNlcjpw4ss"),
])
def test_nginx_directive_forms(text: str, secret: str | None) -> None:
    m = Masker()
    learn_nginx(m, text)
    if secret is not None:
        assert secret not in m(text)


def test_proxy_pass_and_variables_are_not_secrets() -> None:
    assert nginx_secrets("proxy_pass http://backend:8000; proxy_set_header Authorization $http_authorization; "
                         "proxy_cache_key $scheme$host$request_uri; ssl_session_cache none;") == []


def nginx_plan(site: str) -> tuple[str, list[str], Masker]:
    m = Masker()
    facts = {"files": [file_fact(SITE, site)], "nginx": nginx_facts(site)}
    plan = NginxFix(host()).plan(Facts.parse(facts), m)
    return "".join(f.diff(m) for f in plan.changed_files), plan.warnings, m


def test_fix_nginx_diff_and_warnings_mask_the_site_secrets() -> None:
    diff, warnings, m = nginx_plan(SITE_TEXT)
    # the server's Authorization header is copied into the location: a new line of the diff and a warning
    assert "+        proxy_set_header Authorization ***;" in diff
    assert any("copied so it is not silently dropped" in w for w in warnings)
    shown_text = diff + "\n".join(m(w) for w in warnings)
    for secret in SITE_SECRETS:
        assert secret not in shown_text, secret
    unmasked = "".join(FileChange(SITE, SITE_TEXT.encode(), f.new, "x").diff(Masker())
                       for f in NginxFix(host()).plan(Facts.parse({"files": [file_fact(SITE, SITE_TEXT)],
                                                                  "nginx": nginx_facts(SITE_TEXT)}), Masker()).files)
    assert "s1te-bearer-t0ken" in unmasked  # the diff does show the header: the masking is what hides it


def test_site_secrets_learned_when_nginx_gives_no_dump() -> None:
    m = Masker()
    facts = {"files": [file_fact(SITE, SITE_TEXT)],
             "nginx": {**nginx_facts(SITE_TEXT), "test_ok": False, "dump": "", "test_error": "emerg"}}
    plan = NginxFix(host()).plan(Facts.parse(facts), m)
    shown_text = "".join(f.diff(m) for f in plan.changed_files) + "\n".join(m(w) for w in plan.warnings)
    assert "proxy_set_header Authorization ***;" in shown_text
    for secret in SITE_SECRETS:
        assert secret not in shown_text, secret


def test_secrets_of_files_nginx_includes_are_learned_too() -> None:
    site = SITE_TEXT.replace('    proxy_set_header Authorization "Bearer s1te-bearer-t0ken";\n',
                             "    include /etc/nginx/snippets/auth.conf;\n")
    m = Masker()
    facts = {"files": [file_fact(SITE, site)], "nginx": nginx_facts(site)}
    facts["nginx"]["dump"] += ("# configuration file /etc/nginx/snippets/auth.conf:\n"
                               'proxy_set_header Authorization "Bearer inc1uded-t0ken";\n\n')
    plan = NginxFix(host()).plan(Facts.parse(facts), m)
    shown_text = "".join(f.diff(m) for f in plan.changed_files) + "\n".join(m(w) for w in plan.warnings)
    assert "copied so it is not silently dropped" in shown_text and "inc1uded-t0ken" not in shown_text


# -- verify, the compliance history, the webhook ---------------------------------------------------------

def verify_records(flags: dict[str, str], env_text: str, site: str = SITE_TEXT) -> tuple[list[dict[str, Any]], Masker]:
    m = Masker()
    facts = {"files": [file_fact(ENV, env_text), file_fact(SITE, site)], "nginx": nginx_facts(site),
             "container": {"exists": True, "env": ["API_TOKEN=0ld-t0ken-in-container"]}}
    ctx = Context(inv=host(env_flags=flags), host=None, facts=Facts.parse(facts), masker=m, options=VerifyOptions())
    learn_secrets(ctx)
    wanted = ("env-flags", "runtime-env", "nginx-directives")
    return [run_control(c, ctx) for c in CONTROLS if c.id in wanted], m


FLAGS = {"API_TOKEN": "n3w-t0ken-from-inventory", "WS_RATE_LIMIT_ENABLED": "false"}
VERIFY_SECRETS = ["n3w-t0ken-from-inventory", "0ld-t0ken-on-host", "0ld-t0ken-in-container", *SITE_SECRETS]


def test_verify_expected_and_actual_hold_no_secret() -> None:
    records, _ = verify_records(FLAGS, "API_TOKEN=0ld-t0ken-on-host\n")
    assert [r["status"] for r in records] == ["fail", "fail", "fail"]
    text = json.dumps(records)
    for secret in VERIFY_SECRETS:
        assert secret not in text, secret
    assert records[0]["expected"] == {"API_TOKEN": MASK, "WS_RATE_LIMIT_ENABLED": "false"}


def drifted_run(records: list[dict[str, Any]]) -> RunResult:
    h = HostResult(host="h1", task="verify", run_id="r1", status="changed", controls=records)
    return RunResult(task="verify", run_id="r1", started="2025-01-01T00:00:00Z", hosts=[h])


def test_history_and_webhook_body_hold_no_secret(tmp_path: Path) -> None:
    records, m = verify_records(FLAGS, "API_TOKEN=0ld-t0ken-on-host\n")
    # the records as a control would have left them unmasked: history and webhook must mask them anyway
    raw = [{**r, "expected": FLAGS, "actual": {"API_TOKEN": "0ld-t0ken-on-host"}} for r in records]
    run = drifted_run(raw)
    bodies: list[dict[str, Any]] = []

    def alert(r: RunResult, new: dict[str, list[str]]) -> str | None:
        bodies.append(webhook.payload(r, new, m))
        return None

    path = tmp_path / "compliance.jsonl"
    obs = compliance.observe(str(path), run, m, alert=alert)
    assert obs.alerted and bodies
    for what, text in (("history", path.read_text()), ("webhook", json.dumps(bodies))):
        assert "n3w-t0ken-from-inventory" not in text and "0ld-t0ken-on-host" not in text, what
        assert MASK in text, what


# -- the probe's token goes only where it belongs ---------------------------------------------------------

@pytest.mark.parametrize(("target", "own", "to", "sent"), [
    ("wss://api.example.com/ws/chat", "wss://api.example.com/ws/chat", None, True),
    ("wss://API.example.com:8443/other", "wss://api.example.com/ws/chat", None, True),
    ("wss://evil.example.net/ws/chat", "wss://api.example.com/ws/chat", None, False),
    ("wss://evil.example.net/ws/chat", "wss://api.example.com/ws/chat", "evil.example.net", True),
    ("wss://evil.example.net/ws/chat", "wss://api.example.com/ws/chat", "other.example.net", False),
    ("ws://api.example.com/ws/chat", "wss://api.example.com/ws/chat", None, False),  # TLS downgrade
    ("wss://api.example.com/ws/chat", None, None, False),
    ("wss://user:pw@api.example.com.evil.net/ws", "wss://api.example.com/ws/chat", None, False),
])
def test_token_destination(target: str, own: str | None, to: str | None, sent: bool) -> None:
    why = token_refusal(target, own, to)
    assert (why is None) == sent, why
    if why:
        assert "--send-token-to" in why and "pw" not in why


# -- the third-party .env corpus, read in place ----------------------------------------------------------

def corpus_env_files() -> list[tuple[str, str]]:
    """(corpus path, text) of every .env in the corpus MANIFEST that is there, checked against its sha256.

    Test vectors cut out of other projects' test files are stored as python literals in WHERE.tsv
    beside where MANIFEST says they are; they are rebuilt from it (and checked the same way).
    """
    manifest = CORPUS / "MANIFEST.tsv"
    if not manifest.exists():
        pytest.skip(f"the third-party corpus is not on this machine ({manifest})")
    with manifest.open(encoding="utf-8") as f:
        rows = {r["corpus_path"]: r["sha256"] for r in csv.DictReader(f, delimiter="\t") if r["kind"] == "env"}
    texts: dict[str, bytes] = {}
    for where in CORPUS.glob("env/*/vectors/WHERE.tsv"):
        for line in where.read_text(encoding="utf-8").splitlines():
            name, _origin, literal = line.split("\t")
            texts[str((where.parent / name).relative_to(CORPUS))] = ast.literal_eval(literal).encode("utf-8")
    out = []
    for path, sha in rows.items():
        data = (CORPUS / path).read_bytes() if (CORPUS / path).exists() else texts.get(path)
        if data is None:
            continue
        assert hashlib.sha256(data).hexdigest() == sha, f"{path} is not what MANIFEST.tsv says"
        out.append((path, data.decode("utf-8")))
    return out


def secret_lines(text: str) -> list[str]:
    """Every line (>= MIN_LEN) of every value of a secret-looking key, as python-dotenv parses the file."""
    values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    return [line.strip() for k, v in values.items() if v and is_secret_key(k)
            for line in [v, *v.splitlines()] if len(line.strip()) >= MIN_LEN]


def test_corpus_no_secret_value_survives_a_diff_of_every_line() -> None:
    files = corpus_env_files()
    checked = visible_unmasked = 0
    for path, text in files:
        m = Masker()
        learn_env_text(m, text)
        everything_removed = FileChange("/x/.env", text.encode(), b"", "x")
        every_line_changed = FileChange("/x/.env", text.encode(),
                                        "".join(f"{line} #\n" for line in text.splitlines()).encode(), "x")
        for change in (everything_removed, every_line_changed):
            masked, plain = change.diff(m), change.diff(Masker())
            for line in secret_lines(text):
                assert line not in masked, (path, line)
                checked += 1
                visible_unmasked += line in plain
    assert len(files) >= 100 and checked >= 200, (len(files), checked)
    assert visible_unmasked >= checked // 2  # the values really are in the diffs: the masker hides them


quoted_value = st.text(alphabet=st.sampled_from(list("ab9-_ \"'\\\n=#$")), min_size=MIN_LEN, max_size=16)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["API_TOKEN", "DB_PASSWORD", "PRIVATE_KEY", "SESSION_SECRET"]),
                          quoted_value, st.sampled_from(["double", "single", "plain"])), min_size=1, max_size=4))
def test_property_generated_env_masked_whatever_the_quoting(assignments: list[tuple[str, str, str]]) -> None:
    lines = []
    for key, value, style in assignments:
        if style == "double":
            lines.append(f'{key}="' + value.replace("\\", "\\\\").replace('"', '\\"') + '"')
        elif style == "single" and "'" not in value:
            lines.append(f"{key}='{value}'")
        else:
            lines.append(f"{key}=" + value.split("\n")[0].split(" #")[0])
    text = "\n".join(lines) + "\n"
    m = Masker()
    learn_env_text(m, text)
    masked = FileChange("/x/.env", text.encode(), b"", "x").diff(m)
    for line in secret_lines(text):
        assert line not in masked, (text, line)
