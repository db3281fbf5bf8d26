"""The nginx editor against third-party configs, judged by crossplane's lexer and by nginx -t itself.

Two corpora, read in place: the corpus folder (configs from public repositories, nginx's own test
suite and crossplane's test configs among them; MANIFEST.tsv names each) and the .conf files of the
gixy-next sdist (pinned, from the package registry). For every file:

* lexer: our tokens equal crossplane's once crossplane's documented quirks are normalised
  (`lexed_alike`); files either lexer refuses are counted apart; and we refuse exactly what nginx's
  tokenizer refuses (`ngx_conf_read_tokens`, a transcription checked against nginx -t);
* edits: every location gets a WebSocket directive set; each edit re-parses, is idempotent, keeps
  every byte outside its spans, and leaves each directive exactly once in each target block;
* nginx -t (in tests/nginx_sandbox.py, never on the real filesystem): an edited file passes wherever
  its original passed, and a file we refuse is one nginx refuses with a syntax error.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import posixpath
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import crossplane.lexer
import pytest
from crossplane.errors import NgxParserBaseException
from hypothesis import given, settings
from hypothesis import strategies as st

from remediations.edit import nginxconf
from remediations.edit.nginxconf import ensure_directives, identity, list_locations, parse_directive
from remediations.model.errors import NginxConfError
from tests import nginx_sandbox, thirdparty
from tests.nginx_sandbox import Job

GIXY = ("gixy-next==0.9.0", "gixy_next-0.9.0.tar.gz",  # about 580 .conf files, MPL-2.0
        "f52b2d9a44633c0f8c8057aeed8588bd1ca571fd9d7de5dbe1843de5fe7db1b1")
WS = ["proxy_http_version 1.1", "proxy_set_header Upgrade $http_upgrade", 'proxy_set_header Connection "upgrade"',
      "proxy_read_timeout 3600s", "proxy_buffering off"]
CASE = "/etc/nginx/wsguard-case.conf"  # where the file under test sits in the sandbox
MAIN = "/etc/nginx/wsguard-main.conf"  # the wrapper nginx -t reads; it includes CASE


@dataclass
class Case:
    corpus: str
    name: str
    path: Path
    root: Path  # the file's repository (or sdist) top: includes are looked up below it
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "surrogateescape")  # nginx reads bytes; its syntax is ASCII


def folder_cases() -> list[Case] | None:
    root = thirdparty.corpus_dir()
    rows = thirdparty.manifest("nginx")
    if root is None or not rows:
        return None
    out = []
    for r in rows:
        path = root / r["corpus_path"]
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == r["sha256"], f"{path} is not the file MANIFEST.tsv names"
        repo_top = root / Path(r["corpus_path"]).parts[0] / Path(r["corpus_path"]).parts[1]
        out.append(Case("folder", r["corpus_path"], path, repo_top, data))
    return out


def gixy_cases() -> list[Case]:
    top = thirdparty.unpacked(thirdparty.registry_file(*GIXY))
    return [Case("gixy", str(p.relative_to(top)), p, top, p.read_bytes()) for p in sorted(top.rglob("*.conf"))]


# --- crossplane as the reference lexer ----------------------------------------------------------

def nginx_unescape(raw: str) -> str:
    """ngx_conf_read_token's copy loop: \\" \\' \\\\ lose the backslash, \\t \\r \\n become controls, the rest stays."""
    out, i = [], 0
    while i < len(raw):
        if raw[i] == "\\" and i + 1 < len(raw) and raw[i + 1] in "\"'\\trn":
            out.append({"t": "\t", "r": "\r", "n": "\n"}.get(raw[i + 1], raw[i + 1]))
            i += 2
        elif raw[i] == "\\" and i + 1 < len(raw):
            out.append(raw[i : i + 2])
            i += 2
        else:
            out.append(raw[i])
            i += 1
    return "".join(out)


def crossplane_tokens(text: str) -> Iterator[tuple[str, int, bool]]:
    """crossplane.lexer.lex() without its file reading (see lexed_alike on newlines)."""
    return crossplane.lexer._balance_braces(crossplane.lexer._lex_file_object(io.StringIO(text, newline="")))


def lexed_alike(text: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(ours, crossplane's) tokens of `text` as ("word", value), ("#", comment) or (c, c) for ; { }.

    crossplane's documented quirks, normalised here and nowhere else:
    * it keeps backslash escapes as typed (only \\" inside "..." and \\' inside '...' lose theirs): its
      words get nginx's unescaping, which gives nginx's value either way;
    * its `quoted` flag is what tells a quoted '{', '}' or ';' from the punctuation: quoted means a word;
    * it pairs a backslash with the next character everywhere, comments included, so a comment ending in
      an odd backslash loses it (paired with the newline): ours loses it alike;
    * a comment on the last line without a newline is dropped (input ends mid-comment): ours is too;
    * after `${...}` it glues the next character to the word, even a space, and reads on to the next
      space (`${BACKEND} fail_timeout=0` is one word): ours are glued alike;
    * `lex(path)` reads with universal newlines (a bare CR becomes LF and ends a comment; nginx only
      knows LF), so it reads a StringIO that keeps newlines as they are.
    Not normalised (they show up as differences, with the file named): it ends a word at '}' where nginx
    keeps it (`a}b`), its `${` scan runs over ';' and '{', and its whitespace is str.isspace() (nginx's
    is space, tab, CR, LF only).
    """
    theirs: list[tuple[str, str]] = []
    for value, _line, quoted in crossplane_tokens(text):
        if not quoted and value in ("{", "}", ";"):
            theirs.append((value, value))
        elif not quoted and value.startswith("#"):
            theirs.append(("#", value))
        else:
            theirs.append(("word", nginx_unescape(value)))
    toks = list(nginxconf._lex(text))
    ours: list[tuple[str, str]] = []
    i = 0
    while i < len(toks):
        t, raw = toks[i], text[toks[i].start : toks[i].end]
        i += 1
        if t.kind == "#":
            if t.end == len(text):
                continue
            ours.append(("#", t.value[:-1] if re.search(r"(?<!\\)(\\\\)*\\$", t.value) else t.value))
        elif t.kind == "word" and raw[0] not in "\"'" and re.search(r"\$\{[^}\s]*\}$", raw) and t.end < len(text) \
                and text[t.end] in " \t\r\n":
            value = t.value + text[t.end]
            if i < len(toks) and toks[i].kind == "word" and toks[i].start == t.end + 1:
                value, i = value + toks[i].value, i + 1
            ours.append(("word", value))
        else:
            ours.append((t.kind, t.value))
    return ours, theirs


# --- nginx's tokenizer, transcribed: the judge where nginx -t stops before the bytes in question ----

def ngx_conf_read_tokens(data: bytes) -> str | None:
    """nginx's verdict on the syntax of `data`: its error message, or None when it tokenizes to the end.

    A line-by-line transcription of ngx_conf_read_token() (src/core/ngx_conf_file.c, the same from nginx
    1.22 to 1.31), its 4096-byte buffer included, plus the block balance ngx_conf_parse() checks, as if every
    directive were known. nginx -t cannot give this verdict when it stops first at a directive of a
    module it lacks; this does, and it is checked against nginx -t wherever nginx -t does give it.
    It shares no code with nginxconf._lex (a regex tokenizer with offsets).
    """
    n, pos, file_off, last = len(data), 0, 0, 0  # file offsets of b->pos, of what was read, of b->last
    LF, CR, SP, TAB = 10, 13, 32, 9
    OK, BLOCK_START, BLOCK_DONE, FILE_DONE = "ok", "block start", "block done", "file done"

    def read_token() -> str:
        nonlocal pos, file_off, last
        found = need_space = sharp_comment = variable = quoted = s_quoted = d_quoted = False
        last_space = True
        nelts = 0
        start = pos
        while True:
            if pos >= last:
                if file_off >= n:
                    if nelts > 0 or not last_space:
                        return 'unexpected end of file, expecting ";" or "}"'
                    return FILE_DONE
                if pos - start == 4096:  # NGX_CONF_BUFFER: the token fills the whole buffer
                    return "too long parameter"
                size = min(n - file_off, 4096 - (pos - start))  # the buffer keeps [start, pos) and reads on
                file_off += size
                last = file_off
            ch = data[pos]
            pos += 1
            if ch == LF and sharp_comment:
                sharp_comment = False
            if sharp_comment:
                continue
            if quoted:
                quoted = False
                continue
            if need_space:
                if ch in (SP, TAB, CR, LF):
                    last_space, need_space = True, False
                    continue
                if ch == ord(";"):
                    return OK
                if ch == ord("{"):
                    return BLOCK_START
                if ch == ord(")"):
                    last_space, need_space = True, False
                else:
                    return f'unexpected "{chr(ch)}"'
            if last_space:
                start = pos - 1
                if ch in (SP, TAB, CR, LF):
                    continue
                if ch in (ord(";"), ord("{")):
                    if nelts == 0:
                        return f'unexpected "{chr(ch)}"'
                    return BLOCK_START if ch == ord("{") else OK
                if ch == ord("}"):
                    return 'unexpected "}"' if nelts != 0 else BLOCK_DONE
                if ch == ord("#"):
                    sharp_comment = True
                    continue
                last_space = False
                if ch == ord("\\"):
                    quoted = True
                elif ch == ord('"'):
                    start, d_quoted = start + 1, True
                elif ch == ord("'"):
                    start, s_quoted = start + 1, True
                elif ch == ord("$"):
                    variable = True
                continue
            if ch == ord("{") and variable:
                continue
            variable = False
            if ch == ord("\\"):
                quoted = True
                continue
            if ch == ord("$"):
                variable = True
                continue
            if d_quoted:
                if ch == ord('"'):
                    d_quoted, need_space, found = False, True, True
            elif s_quoted:
                if ch == ord("'"):
                    s_quoted, need_space, found = False, True, True
            elif ch in (SP, TAB, CR, LF, ord(";"), ord("{")):
                last_space, found = True, True
            if found:
                nelts += 1
                if ch == ord(";"):
                    return OK
                if ch == ord("{"):
                    return BLOCK_START
                found = False

    depth = 0
    while True:
        rc = read_token()
        if rc == BLOCK_START:
            depth += 1
        elif rc == BLOCK_DONE:
            if depth == 0:
                return 'unexpected "}"'
            depth -= 1
        elif rc == FILE_DONE:
            return 'unexpected end of file, expecting "}"' if depth else None
        elif rc != OK:
            return rc


# --- one file: lex, parse, edit ------------------------------------------------------------------

@dataclass
class Analysis:
    refused: str | None = None  # our lexer/parser's message
    transcribed: str | None = None  # ngx_conf_read_tokens' verdict
    crossplane: str = ""  # "equal", "differs at ...", "refuses: ...", or "accepts" what we refuse
    locations: int = 0
    edited: str | None = None  # the text after every location's edit (None: nothing to edit)
    problems: list[str] = field(default_factory=list)  # broken edit promises
    jobs: list[Job] = field(default_factory=list)  # the original in each context to try, in order


def compare_with_crossplane(text: str, refused: str | None) -> str:
    try:
        if refused:  # is crossplane as strict?
            list(crossplane_tokens(text))
            return "accepts"
        ours, theirs = lexed_alike(text)
    except NgxParserBaseException as e:
        return f"refuses: {e}"
    if ours == theirs:
        return "equal"
    at = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs)))
    return f"differs at token {at}: ours {ours[at:at + 2]} crossplane {theirs[at:at + 2]}"


def splice(text: str, edits: list[tuple[int, int, str]]) -> str:
    out, pos = [], 0
    for start, end, new in sorted(edits):
        assert start >= pos, "overlapping edits"
        out += [text[pos:start], new]
        pos = end
    return "".join(out) + text[pos:]


def edit_problems(before: str, old_tree: list[nginxconf._Stmt], after: str, loc: str
                  ) -> tuple[list[str], list[nginxconf._Stmt]]:
    """What ensure_directives promises for one location, checked from the outside; and after's tree."""
    problems: list[str] = []
    try:
        tree = nginxconf._parse(after)
    except NginxConfError as e:
        return [f"{loc}: the result does not parse: {e.message}"], old_tree
    wanted = {identity(*parse_directive(d)): parse_directive(d)[1] for d in WS}
    for block in nginxconf._targets(after, tree, loc):  # what location_blocks(after, loc) lists
        for ident, args in wanted.items():
            got = [a for n, a in nginxconf._simple(block.block or []) if identity(n, a) == ident]
            if got != [args]:
                problems.append(f"{loc}: {ident} is {got} in a target block, want once {args}")
    # every byte outside the edits' spans is kept, and each span holds only the ensured directives
    blocks = nginxconf._targets(before, old_tree, loc)
    edits = [e for b in blocks for e in nginxconf._block_edits(before, b, nginxconf._wanted(WS))]
    if splice(before, edits) != after:
        problems.append(f"{loc}: the result is not the original with the edits spliced in")
    for start, end, new in edits:
        if not any(b.open < start <= end < b.end for b in blocks):
            problems.append(f"{loc}: an edit at {start}..{end} lies outside the target blocks")
        for part in (before[start:end], new):
            try:
                stmts = nginxconf._parse(part)
            except NginxConfError:
                stmts = [nginxconf._Stmt("(not a whole statement)", [], 0, 0)]
            if any(s.block is not None or identity(s.name, s.args) not in wanted for s in stmts):
                problems.append(f"{loc}: an edit touches more than the ensured directives: {part!r}")
    if all(s == e for s, e, _ in edits):  # pure insertion: take the inserted text out again
        pieces, pos, shift = [], 0, 0
        for start, _end, new in sorted(edits):
            at = start + shift
            if after[at : at + len(new)] != new:
                problems.append(f"{loc}: the inserted text is not where the edit says")
            pieces.append(after[pos:at])
            pos, shift = at + len(new), shift + len(new)
        if "".join(pieces) + after[pos:] != before:
            problems.append(f"{loc}: removing the inserted lines does not give the original back")
    return problems, tree


def analyse(case: Case) -> Analysis:
    text = case.text
    a = Analysis()
    try:
        nginxconf._parse(text)
    except NginxConfError as e:
        a.refused = e.message
    a.crossplane = compare_with_crossplane(text, a.refused)
    a.transcribed = ngx_conf_read_tokens(case.data)
    edited = text
    if a.refused is None:
        locs = list_locations(text)
        a.locations = len(locs)
        tree = nginxconf._parse(text)
        try:
            for loc in locs:  # one after another, on one text
                try:
                    after = ensure_directives(edited, loc, WS)
                except NginxConfError as e:
                    a.problems.append(f"{loc}: ensure_directives refused: {e}")
                    continue
                problems, tree = edit_problems(edited, tree, after, loc)
                a.problems += problems
                edited = after
            for loc in locs:  # idempotent: every location's edit again, on the final text, changes nothing
                if ensure_directives(edited, loc, WS) != edited:
                    a.problems.append(f"{loc}: editing again changes the text")
        except Exception as e:  # reported with the file's name, not as a pool traceback
            a.problems.append(f"crashed: {e!r}")
    if edited != text:
        a.edited = edited
    a.jobs = nginx_jobs(case)
    return a


# --- nginx -t: the file in a wrapper, with what it needs around it ------------------------------

MAIN_ONLY = {"events", "http", "stream", "mail", "worker_processes", "user", "pid", "load_module", "daemon",
             "master_process", "worker_rlimit_nofile", "worker_rlimit_core", "worker_priority", "env",
             "worker_cpu_affinity", "worker_shutdown_timeout", "timer_resolution", "pcre_jit", "thread_pool",
             "lock_file", "working_directory", "ssl_engine", "worker_aio_requests", "debug_points"}
HTTP_ONLY = {"server", "upstream", "map", "geo", "log_format", "limit_req_zone", "limit_conn_zone",
             "proxy_cache_path", "fastcgi_cache_path", "uwsgi_cache_path", "scgi_cache_path", "split_clients",
             "server_names_hash_bucket_size", "server_names_hash_max_size", "variables_hash_max_size",
             "variables_hash_bucket_size", "map_hash_bucket_size", "map_hash_max_size"}
LOCATION_ONLY = {"proxy_pass", "fastcgi_pass", "uwsgi_pass", "scgi_pass", "grpc_pass", "memcached_pass", "alias",
                 "internal", "limit_except"}
WRAPPER_CERT = "/etc/nginx/wsguard-cert.pem"
# The http wrappers stand in for the nginx.conf around a site: its certificate (what an included ssl.conf
# would give a `listen 443 ssl` server) is the throw-away one. CASE and CERT are filled in.
HTTP = "events {}\nhttp {\n    ssl_certificate CERT;\n    ssl_certificate_key CERT;\n"
WRAPPERS = {
    "main": "include CASE;\n",  # and `events {}` when the file has none
    "http": HTTP + "    include CASE;\n}\n",
    "stream": "events {}\nstream {\n    include CASE;\n}\n",
    "server": HTTP + "    server {\n        include CASE;\n    }\n}\n",
    "location": HTTP + "    server {\n        location / {\n            include CASE;\n        }\n    }\n}\n",
}
PASS = {"proxy_pass", "fastcgi_pass", "uwsgi_pass", "scgi_pass", "grpc_pass", "memcached_pass"}
CERTS = {f"{p}_{k}" for p in ("ssl", "proxy_ssl", "grpc_ssl", "uwsgi_ssl")
         for k in ("certificate", "certificate_key", "trusted_certificate")} | {"ssl_client_certificate"}
PATHS = {"access_log", "error_log", "pid", "lock_file", "client_body_temp_path", "proxy_temp_path",
         "fastcgi_temp_path", "uwsgi_temp_path", "scgi_temp_path", "proxy_cache_path", "fastcgi_cache_path"}
MIME = b"types {\n    text/html html;\n    text/css css;\n    application/javascript js;\n    image/png png;\n}\n"
MATERIAL: dict[str, bytes] = {}  # cert, key, dh: set up by the fixture (and handed to pool workers by fork)


def contexts(names: set[str]) -> list[str]:
    """The wrapping contexts to try for a file whose top-level directives are `names`, best guess first."""
    if names & MAIN_ONLY:
        return ["main"]
    if names & HTTP_ONLY:
        return ["http", "stream"]
    if names & LOCATION_ONLY:
        return ["location", "server"]
    return ["server", "location", "http", "stream"]


def _walk(stmts: list[nginxconf._Stmt], parent: str = "") -> Iterator[tuple[nginxconf._Stmt, str]]:
    for s in stmts:
        yield s, parent
        if s.block is not None:
            yield from _walk(s.block, s.name)


def _host(arg: str) -> str | None:
    """The host name a pass/upstream/listen/resolver argument resolves at startup, if any."""
    if "$" in arg or arg.startswith(("unix:", "[")):
        return None
    host = re.sub(r"^[a-z]+://", "", arg).split("/")[0].rsplit("@", 1)[-1].split(":")[0]
    if not host or host == "*" or re.fullmatch(r"[\d.]+", host) or not re.fullmatch(r"[A-Za-z0-9._-]+", host):
        return None
    return host


def _in_sandbox(path: str) -> str:
    return path if path.startswith("/") else nginx_sandbox.PREFIX + path


def _corpus_file(case: Case, arg: str) -> Path | None:
    """The corpus file an include names, looked up from the file's folder up to its repository's top."""
    if arg.startswith("/etc/nginx/"):
        rels = [arg.removeprefix("/etc/nginx/")]
    elif arg.startswith("/"):
        parts = arg.strip("/").split("/")
        rels = ["/".join(parts[i:]) for i in range(len(parts))]
    else:
        rels = [arg]
    d = case.path.parent
    while True:
        for rel in rels:
            p = d / rel
            if p.is_file() and p.resolve().is_relative_to(case.root.resolve()):
                return p
        if d == case.root or d == d.parent:
            return None
        d = d.parent


def nginx_jobs(case: Case) -> list[Job]:
    """nginx -t of the file in each context worth trying, best guess first, with what it needs around it:
    the corpus files it includes (stubs for the others), certificates, directories, users, host names."""
    files: dict[str, bytes] = {}
    dirs: set[str] = set()
    hosts: set[str] = set()
    users: set[str] = set()
    names: set[str] = set()

    def visit(text: str, depth: int, top: bool) -> None:
        try:
            tree = nginxconf._parse(text)
        except NginxConfError:  # refused: a rough look at the top-level names is enough to wrap it
            if top:
                names.update(re.findall(r"^(\w+)", text, re.M))
            return
        if top:
            names.update(s.name for s in tree)
        for s, parent in _walk(tree):
            if s.name in PASS or (s.name == "server" and parent == "upstream") or s.name in ("resolver", "listen"):
                hosts.update(h for h in map(_host, s.args[:1] if s.name != "resolver" else s.args) if h)
            if s.name == "user" and s.args:
                users.update(s.args[:2])
            for arg in s.args:
                if arg.startswith("/") and "$" not in arg:
                    dirs.add(posixpath.dirname(arg))
            if s.name in PATHS and s.args and "$" not in s.args[0]:
                dirs.add(posixpath.dirname(_in_sandbox(s.args[0])))
            if s.name == "listen" and s.args and s.args[0].startswith("unix:/"):
                dirs.add(posixpath.dirname(s.args[0].removeprefix("unix:")))
            ssl_file = s.name in CERTS | {"ssl_dhparam", "ssl_session_ticket_key"} or s.name.endswith("_password_file")
            if ssl_file and s.args and "$" not in s.args[0] and not s.args[0].startswith(("data:", "engine:")):
                material = {"ssl_dhparam": MATERIAL["dh"], "ssl_session_ticket_key": os.urandom(80)}.get(
                    s.name, b"unused\n" if s.name.endswith("_password_file") else MATERIAL["key"] + MATERIAL["cert"])
                files.setdefault(_in_sandbox(s.args[0]), material)
            if s.name == "include" and s.args and "$" not in s.args[0] and not set("*?[") & set(s.args[0]):
                target = _in_sandbox(s.args[0])
                if target in files or target == CASE:
                    continue
                found = _corpus_file(case, s.args[0]) if depth < 4 else None
                if found is None:
                    files[target] = MIME if posixpath.basename(target) == "mime.types" else b""
                else:
                    files[target] = found.read_bytes()
                    visit(files[target].decode("utf-8", "surrogateescape"), depth + 1, False)

    visit(case.text, 0, True)
    files[WRAPPER_CERT] = MATERIAL["key"] + MATERIAL["cert"]
    jobs = []
    for ctx in contexts(names):
        main = WRAPPERS[ctx].replace("CASE", CASE).replace("CERT", WRAPPER_CERT)
        if ctx == "main" and "events" not in names:
            main += "events {}\n"
        jobs.append(Job(conf=MAIN, files={**files, MAIN: main.encode(), CASE: case.data}, dirs=sorted(dirs),
                        hosts=sorted(hosts), users=sorted(users)))
    return jobs


SYNTAX = re.compile(r'\[emerg\] \d+#\d+: (unexpected "[^"]*"|unexpected end of file, expecting [^\n]*|'
                    r'too long parameter[^\n]*) in ' + re.escape(CASE) + r":(\d+)")
FIRST_ERROR = re.compile(r"\[emerg\] \d+#\d+: ([^\n]*?)(?: in (\S+):(\d+))?\n")


def first_error(stderr: str) -> str:
    m = FIRST_ERROR.search(stderr)
    return m.group(0).split(": ", 1)[1].strip() if m else stderr.strip()[:200]


def with_edited(job: Job, edited: str) -> Job:
    """The same run with the edited file in place of the original."""
    return Job(conf=job.conf, files={**job.files, CASE: edited.encode("utf-8", "surrogateescape")}, dirs=job.dirs,
               hosts=job.hosts, users=job.users)


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """One throw-away self-signed certificate, its key and DH parameters, for every config that names some."""
    d = tmp_path_factory.mktemp("nginx-material")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d / "key.pem",
                    "-out", d / "cert.pem", "-days", "2", "-subj", "/CN=wsguard-corpus-test"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe2048",
                    "-out", d / "dh.pem"], check=True, capture_output=True)
    MATERIAL.update({k: (d / f"{k}.pem").read_bytes() for k in ("cert", "key", "dh")})
    return MATERIAL


@dataclass
class Corpus:
    cases: list[Case]
    results: list[Analysis]
    seconds: float


ANALYSED: dict[str, Corpus] = {}


def analysed(name: str) -> Corpus:
    """Every file of a corpus analysed once (both processors busy), shared by the tests below."""
    if name not in ANALYSED:
        cases = folder_cases() if name == "folder" else gixy_cases()
        if cases is None:
            pytest.skip("no third-party corpus (shared/corpus/third-party beside the repository, or "
                        "$WSGUARD_THIRD_PARTY_CORPUS): the folder corpus cannot be checked here")
        t = time.monotonic()
        with multiprocessing.get_context("fork").Pool(os.cpu_count() or 2) as pool:
            results = pool.map(analyse, cases, chunksize=8)
        ANALYSED[name] = Corpus(cases, results, time.monotonic() - t)
    return ANALYSED[name]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[nginx_sandbox.Sandbox]:
    why = nginx_sandbox.unavailable()
    if why:
        pytest.skip(why)
    sb = nginx_sandbox.Sandbox(slots=4)
    try:
        yield sb
    finally:
        sb.close()


CORPORA = ["folder", "gixy"]


# --- the tests -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CORPORA)
def test_lexer_agrees_with_crossplane(name: str, material: dict[str, bytes],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    c = analysed(name)
    equal = sum(r.crossplane == "equal" for r in c.results)
    crossplane_refuses = sum(r.crossplane.startswith("refuses") for r in c.results)
    differs = [f"{case.name}: {r.crossplane}" for case, r in zip(c.cases, c.results, strict=True)
               if r.crossplane.startswith("differs")]
    with capsys.disabled():
        print(f"\n[{name}] {len(c.cases)} files (analysed in {c.seconds:.1f}s): lexed equal to crossplane {equal}, "
              f"differing {len(differs)}; refused by crossplane {crossplane_refuses}, by us "
              f"{sum(r.refused is not None for r in c.results)}")
    assert c.cases and equal
    assert not differs, "\n".join(differs)


@pytest.mark.parametrize("name", CORPORA)
def test_lexer_refuses_what_nginx_tokenizer_refuses(name: str, material: dict[str, bytes]) -> None:
    """Ours against the transcription of nginx's tokenizer, file by file (no nginx needed)."""
    c = analysed(name)
    odd = [f"{case.name}: ours {r.refused!r}, nginx's tokenizer {r.transcribed!r}"
           for case, r in zip(c.cases, c.results, strict=True) if (r.refused is None) != (r.transcribed is None)]
    assert not odd, "\n".join(odd)


@pytest.mark.parametrize("name", CORPORA)
def test_edits_keep_their_promises(name: str, material: dict[str, bytes], capsys: pytest.CaptureFixture[str]) -> None:
    c = analysed(name)
    problems = [f"{case.name}: {p}" for case, r in zip(c.cases, c.results, strict=True) for p in r.problems]
    edited = sum(r.edited is not None for r in c.results)
    with capsys.disabled():
        print(f"\n[{name}] {sum(r.refused is None for r in c.results)} files parse, "
              f"{sum(r.locations for r in c.results)} locations edited in {edited} files, "
              f"{len(problems)} broken promises")
    assert edited > 0
    assert not problems, "\n".join(problems[:50])


@pytest.mark.parametrize("name", CORPORA)
def test_nginx_agrees(name: str, material: dict[str, bytes], sandbox: nginx_sandbox.Sandbox,
                      capsys: pytest.CaptureFixture[str]) -> None:
    t = time.monotonic()
    c = analysed(name)
    # the best-guess context first; one that does not fit ("is not allowed here") gets the next
    tries: dict[int, list[nginx_sandbox.Result]] = {i: [] for i in range(len(c.cases))}
    todo = list(tries)
    while todo:
        for i, res in zip(todo, sandbox.run(c.results[i].jobs[len(tries[i])] for i in todo), strict=True):
            tries[i].append(res)
        todo = [i for i in todo if "is not allowed here" in tries[i][-1].stderr
                and len(tries[i]) < len(c.results[i].jobs)]
    tried = {i: next((k for k, r in enumerate(rs) if r.ok), next((k for k, r in enumerate(rs)
                                                                  if SYNTAX.search(r.stderr)), 0))
             for i, rs in tries.items()}
    verdict = {i: tries[i][k] for i, k in tried.items()}
    passing = [i for i in verdict if verdict[i].ok]
    edited = [i for i in passing if c.results[i].edited is not None]
    edited_results = sandbox.run(with_edited(c.results[i].jobs[tried[i]], c.results[i].edited or "")
                                 for i in edited)
    broken = [f"{c.cases[i].name}: {first_error(r.stderr)}" for i, r in zip(edited, edited_results, strict=True)
              if not r.ok]
    # the transcribed tokenizer must say what nginx -t says wherever nginx -t gets that far
    mistranscribed = [f"{c.cases[i].name}: nginx -t {first_error(v.stderr) if not v.ok else 'passes'}, "
                      f"transcription {c.results[i].transcribed!r}" for i, v in verdict.items()
                      if (v.ok or SYNTAX.search(v.stderr)) and v.ok != (c.results[i].transcribed is None)]
    agreed, beyond, diverged = [], [], []
    for i, r in enumerate(c.results):
        if r.refused is None:
            continue
        v = verdict[i]
        if not v.ok and SYNTAX.search(v.stderr):
            agreed.append(i)
        elif not v.ok and r.transcribed is not None:  # nginx -t stopped first at a module it lacks
            beyond.append(f"{c.cases[i].name}: nginx -t stops at {first_error(v.stderr)!r}; its tokenizer: "
                          f"{r.transcribed}")
        else:
            diverged.append(f"{c.cases[i].name}: we refuse ({r.refused}), nginx: "
                            f"{'accepts' if v.ok else first_error(v.stderr)}")
    with capsys.disabled():
        print(f"\n[{name}] nginx -t: {len(passing)}/{len(c.cases)} originals pass, {len(edited)} of them edited, "
              f"{len(edited) - len(broken)} edited pass; we refuse {len(agreed) + len(beyond) + len(diverged)}: "
              f"nginx -t agrees on {len(agreed)}, nginx's tokenizer (transcribed) on {len(beyond)} more where "
              f"nginx -t stops earlier, divergences {len(diverged)}; {time.monotonic() - t:.1f}s")
        for line in beyond:
            print(f"  {line}")
    assert passing, "no original passes nginx -t: the sandbox or the wrappers are broken"
    assert not broken, "edited files that fail where their original passed:\n" + "\n".join(broken)
    assert not diverged, "files we refuse but nginx's tokenizer accepts:\n" + "\n".join(diverged)
    assert not mistranscribed, "the transcribed tokenizer disagrees with nginx -t:\n" + "\n".join(mistranscribed)


def test_token_length_limit_matches_nginx(sandbox: nginx_sandbox.Sandbox) -> None:
    """nginx refuses a token that outgrows its 4096-byte read buffer; where exactly depends on what follows it."""
    bodies = ["env V=x{n};", "env V=x{n} ;", 'env "x{n}";', 'env "x{n}" ;', 'env "x{n}")a;', "#x{n}\nenv A;",
              "env V=é{n};"]
    texts = [f"{pad}{body.replace('x{n}', 'x' * n).replace('é{n}', 'é' * (n // 2))}\nevents {{}}\n"
             for pad in ("", "#" + "p" * 3000 + "\n") for body in bodies for n in (4092, 4093, 4094, 4095, 4096)]
    results = sandbox.run(Job(conf=MAIN, files={MAIN: t.encode()}) for t in texts)
    wrong = []
    for text, res in zip(texts, results, strict=True):
        nginx_too_long = "too long parameter" in res.stderr
        try:
            nginxconf._parse(text)
            ours = False
        except NginxConfError as e:
            ours = "too long parameter" in e.message
        transcribed = "too long" in (ngx_conf_read_tokens(text.encode()) or "")
        if not ours == transcribed == nginx_too_long:
            wrong.append(f"{text[:40]!r}... ({len(text.encode())} bytes): nginx {nginx_too_long}, ours {ours}, "
                         f"transcribed {transcribed}")
    assert sum("too long parameter" in r.stderr for r in results) > 10, "the boundaries were not reached"
    assert not wrong, "\n".join(wrong)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([*"ab ;{}#\"'\\$()\n\t\r", "${", "a}", "\u00e9", "\u00a0"]), max_size=40).map("".join))
def test_property_refuses_what_transcribed_tokenizer_refuses(text: str) -> None:
    try:
        nginxconf._parse(text)
        ours = None
    except NginxConfError as e:
        ours = e.message
    assert (ours is None) == (ngx_conf_read_tokens(text.encode()) is None), ours
