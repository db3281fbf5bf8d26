"""envfile's model of where env-file readers part ways, held against the real readers.

Inputs: every env file of the third-party corpus (MANIFEST.tsv, read in place; test vectors rebuilt from
WHERE.tsv), the env strings of python-dotenv's own test tables (the corpus copy of its tests and its
1.2.4 sdist, read with `ast`), and the inputs the issue measured. Readers (tests/env_readers.py):
python-dotenv from the venv (interpolating, as compose calls it, and literal, as read_values reads),
docker-compose 1.29's env_vars_from_file, and docker compose v2's `config`.

(a) whatever agreed_values claims, every reader gives; a file it accepts, no reader rejects;
(b) set_flags either refuses (EnvFileError) or writes a file where every reader gives each flag its value
    and every other key what it gave before; setting keys to the values already agreed changes nothing.
"""

from __future__ import annotations

import ast
import hashlib
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from remediations.edit.envfile import agreed_values, duplicate_keys, read_values, set_flags, validate_flags
from remediations.model.errors import EnvFileError
from tests.env_readers import Reading, read_all
from tests.thirdparty import corpus_dir, manifest, registry_file, unpacked

DOTENV_SDIST = ("python-dotenv==1.2.4", "python_dotenv-1.2.4.tar.gz",
                "f0d53e69935a851c0dcc78f3ab7aaccd8cabef0b92382b576b824212902873c0")
# Columns of python-dotenv's parametrize tables that hold env-file text, and values it writes.
TEXT_COLUMNS = {"test_input", "string", "before", "after"}
VALUE_COLUMNS = {"value"}

DOTENV, COMPOSE_1, COMPOSE_2 = "python-dotenv 1.2.4", "docker-compose 1.29.2", "compose v2.40.3"
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # keys set_flags accepts
# The issue's measurements: text, key, what each reader gives ("<HOME>": the readers' $HOME; absent: None).
ISSUE = [
    ("WS_RATE_LIMIT_ENABLED=false\t# off\n", "WS_RATE_LIMIT_ENABLED", "false", "false", "false\t# off"),
    ("FOO= # c\n", "FOO", "", "# c", "# c"),
    ("A=$$\n", "A", "$$", "$$", "$"),
    ('A="$$"\n', "A", "$$", "$$", "$"),
    ("A='$$'\n", "A", "$$", "$$", "$$"),
    ("A='a${HOME}b'\n", "A", "a<HOME>b", "a<HOME>b", "a${HOME}b"),
    ('A="$HOME"\n', "A", "$HOME", "$HOME", "<HOME>"),
    ("A=$HOME\n", "A", "$HOME", "$HOME", "<HOME>"),
    ("A='$HOME'\n", "A", "$HOME", "$HOME", "$HOME"),
    ("A=\"it's $HOME\"\n", "A", "it's $HOME", "it's $HOME", "it's <HOME>"),
    ("A=1\rB=2\rWS=0\r", "WS", "0", "0", None),
    ("A=x\nB=$A\n", "B", "$A", "$A", "x"),
]
# The edits the issue is about, checked against the readers like every other edit.
ISSUE_EDITS = [
    ("WS_RATE_LIMIT_ENABLED=false\t# off\n", {"WS_RATE_LIMIT_ENABLED": "false"}),
    ("FOO=x # c\n", {"FOO": ""}),
    ("FOO= # c\n", {"FOO": ""}),
    ("A=old\n", {"A": "it's $HOME"}),
    ('A="$HOME"\n', {"A": "$HOME"}),
    ("A=$$\n", {"A": "$$"}),
    ("A=x\nB=$A\n", {"B": "$A"}),
    ("A=1\r\nB=2\r\n", {"WS": "0"}),
]
# Realistic flags, all new to the corpus files (appended).
NEW_FLAGS = {"WS_RATE_LIMIT_ENABLED": "false", "WS_PING_INTERVAL": "20", "WS_UPSTREAM_HINT": "$upstream_addr",
             "WS_EMPTY": "", "WS_NOTE": "ping every 20 s # not a comment"}
# Values written over keys a file already has (rewriting in place).
TRICKY = ["false", "$HOME and $$ stay literal", "", "it's # not a comment", " padded ", "a\\b", 'say "hi"']


# Generated lines, seeded: spellings around the rules (blanks before '#', quotes, escapes, '$', CRLF).
ATOMS = [" ", "\t", "=", "#", " #", "\t#", "'", '"', "\\", "$", "$A", "${A}", "${A:-x}", "$$", "x", "y z", "\\n",
         "\\'", '\\"', "\\\\", "\x0b", "\xa0", "{", "}", ":", "\\$", "\u00e9", "\\c", "`"]
GENERATED = 300


def generated(count: int) -> list[str]:
    """Small env files from ATOMS that the model does not refuse (so compose v2 rarely rejects one and
    costs a rerun of its batch): they test what the model claims, where it claims it."""
    rnd, out = random.Random(20261204), list[str]()
    while len(out) < count:
        lines = []
        for _ in range(rnd.randint(1, 4)):
            value = "".join(rnd.choice(ATOMS) for _ in range(rnd.randint(0, 5)))
            quote = rnd.choice(["", "", "'", '"'])
            lines.append(rnd.choice(["", "", "export ", " ", "\t"]) + rnd.choice(["A", "B", "WS", "C_1"])
                         + rnd.choice(["=", "=", " = ", "= ", "=\t"]) + quote + value + quote
                         + rnd.choice(["", "", " # c", "\t# c", "#c"]))
        text = rnd.choice(["\n", "\r\n"]).join(lines) + rnd.choice(["", "\n"])
        try:
            agreed_values(text)
        except EnvFileError:
            continue
        out.append(text)
    return out


@dataclass
class Run:
    home: str = ""
    seconds: float = 0.0
    inputs: list[tuple[str, str]] = field(default_factory=list)  # (name, text)
    sources: Counter[str] = field(default_factory=Counter)
    missing: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # everything the readers read
    readings: dict[str, list[Reading]] = field(default_factory=dict)
    edits: list[tuple[str, int, dict[str, str], int]] = field(default_factory=list)  # name, before, flags, after
    refused: Counter[str] = field(default_factory=Counter)
    unchanged: int = 0

    def index(self, text: str) -> int:
        self.texts.append(text)
        return len(self.texts) - 1


def parametrize_strings(source: str) -> tuple[list[tuple[int, str]], list[str]]:
    """(line, text) of every env text in the file's parametrize tables, and the values it sets."""
    texts, values = [], []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "parametrize" and len(node.args) >= 2):
            continue
        spec = node.args[0]
        names = ([n.strip() for n in spec.value.split(",")] if isinstance(spec, ast.Constant)
                 and isinstance(spec.value, str) else [])
        table = node.args[1]
        for row in table.elts if isinstance(table, ast.List | ast.Tuple) else []:
            cells = row.elts if isinstance(row, ast.Tuple | ast.List) else [row]
            for name, cell in zip(names, cells, strict=False):
                if isinstance(cell, ast.Constant) and isinstance(cell.value, str):
                    if name in TEXT_COLUMNS:
                        texts.append((cell.lineno, cell.value))
                    elif name in VALUE_COLUMNS:
                        values.append(cell.value)
    return texts, values


def collect(run: Run, root: Path) -> list[str]:
    """Fill run.inputs from the corpus and python-dotenv's sdist; return the values python-dotenv's
    tests write (extra tricky values)."""
    vectors: dict[str, bytes] = {}
    for where in root.glob("env/*/vectors/WHERE.tsv"):
        for line in where.read_text(encoding="utf-8").splitlines():
            name, _origin, literal = line.split("\t")
            vectors[str((where.parent / name).relative_to(root))] = ast.literal_eval(literal).encode("utf-8")
    values: list[str] = []
    for row in manifest("env") + manifest("envtests"):
        path = root / row["corpus_path"]
        data = path.read_bytes() if path.exists() else vectors.get(row["corpus_path"])
        if data is None:
            run.missing.append(row["corpus_path"])
            continue
        assert hashlib.sha256(data).hexdigest() == row["sha256"], f"{row['corpus_path']}: not what MANIFEST.tsv says"
        if row["kind"] == "envtests":
            texts, more = parametrize_strings(data.decode("utf-8"))
            run.inputs += [(f"{row['corpus_path']}:{n}", t) for n, t in texts]
            run.sources["python-dotenv test tables (corpus copy)"] += len(texts)
            values += more
        else:
            run.inputs.append((row["corpus_path"], data.decode("utf-8")))
            run.sources["corpus files" if path.exists() else "corpus vectors (WHERE.tsv)"] += 1
    sdist = unpacked(registry_file(*DOTENV_SDIST))
    texts, more = parametrize_strings((sdist / "tests" / "test_parser.py").read_text(encoding="utf-8"))
    run.inputs += [(f"python-dotenv 1.2.4 sdist tests/test_parser.py:{n}", t) for n, t in texts]
    run.sources["python-dotenv 1.2.4 sdist test_parser.py"] += len(texts)
    run.inputs += [(f"issue: {t!r}", t) for t, *_ in ISSUE] + [(f"issue edit: {t!r}", t) for t, _ in ISSUE_EDITS]
    run.sources["issue inputs"] += len(ISSUE) + len(ISSUE_EDITS)
    run.inputs += [(f"generated #{n}: {t!r}", t) for n, t in enumerate(generated(GENERATED))]
    run.sources["generated"] += GENERATED
    return values + [v for v in more if v not in values]


def flag_sets(text: str, n: int, tricky: list[str]) -> list[dict[str, str]]:
    """Flags to set in the n-th input: the realistic new ones, and tricky values over keys it already has."""
    try:
        keys = [k for k in read_values(text) if NAME.fullmatch(k)]
    except EnvFileError:
        keys = []
    picked = list(dict.fromkeys([keys[0], keys[len(keys) // 2], keys[-1]])) if keys else []
    sets = [NEW_FLAGS]
    if picked:
        sets.append({k: tricky[(n + i) % len(tricky)] for i, k in enumerate(picked)})
    return sets


def settable(key: str, value: str) -> bool:
    """set_flags takes it (not a multi-line value, say)."""
    try:
        validate_flags({key: value})
    except EnvFileError:
        return False
    return True


def reason(error: EnvFileError) -> str:
    """The kind of refusal, without line numbers or key names."""
    text = re.sub(r"\blines? [\d, ]+", "line N ", error.message)
    return re.sub(r"\b[A-Za-z_]\w*(?= on line N)|(?<=set )\w+|(?<=change )\w+", "KEY", text)[:160]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = corpus_dir()
    if root is None or not (root / "MANIFEST.tsv").exists():
        pytest.skip("the third-party corpus is not on this machine (shared/corpus/third-party beside the "
                    "repository, or $WSGUARD_THIRD_PARTY_CORPUS)")
    started = time.perf_counter()
    r = Run()
    tricky = TRICKY + collect(r, root)
    originals = [r.index(text) for _, text in r.inputs]
    edits = [(name, i, flags) for n, ((name, text), i) in enumerate(zip(r.inputs, originals, strict=True))
             for flags in flag_sets(text, n, tricky)]
    edits += [(f"issue edit: {text!r}", originals[[t for _, t in r.inputs].index(text)], flags)
              for text, flags in ISSUE_EDITS]
    for name, before, flags in edits:
        try:
            out = set_flags(r.texts[before], flags)
        except EnvFileError as error:
            assert error.hint, error.message
            r.refused[reason(error)] += 1
            continue
        r.unchanged += out == r.texts[before]
        r.edits.append((name, before, flags, r.index(out)))
    workdir = tmp_path_factory.mktemp("env-readers")
    r.readings = read_all(r.texts, workdir)
    r.home = str(workdir / "home")
    r.seconds = time.perf_counter() - started
    return r


def test_model_claims_only_what_every_reader_gives(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    divergences, unsafe, claimed, unknown = [], Counter[str](), 0, 0
    for i, text in enumerate(run.texts):
        name = next((n for n, t in run.inputs if t == text), f"edited text #{i}")
        try:
            claims = agreed_values(text)
        except EnvFileError as error:
            unsafe[reason(error)] += 1
            continue
        for reader, readings in run.readings.items():
            got = readings[i]
            if isinstance(got, str):
                divergences.append(f"{name}: the model accepts the file, {reader} rejects it: {got}")
                continue
            for key, value in claims.items():
                if got.get(key, "<absent>") != value:
                    divergences.append(f"{name}: {key}: model {value!r}, {reader} {got.get(key, '<absent>')!r}")
        claimed += len(claims)
        unknown += len({k for r in run.readings.values() if isinstance(r[i], dict) for k in r[i]} - set(claims))
    with capsys.disabled():
        print(f"\nenv corpus: {len(run.inputs)} inputs ({dict(run.sources)}); {len(run.missing)} MANIFEST files "
              f"absent from this corpus copy; {len(run.texts)} texts read by {len(run.readings)} readers "
              f"in {run.seconds:.1f} s")
        print(f"  model: {claimed} keys claimed and compared with every reader, {unknown} left unclaimed; "
              f"{sum(unsafe.values())} texts refused as doubtful:")
        for why, count in unsafe.most_common():
            print(f"    {count:4}  {why}")
        print(f"  divergences: {len(divergences)}")
    # every source gave inputs (an empty ast extraction or a missing sdist would otherwise pass quietly)
    assert all(run.sources.values()) and len(run.sources) == 6 and claimed > 1000, (dict(run.sources), claimed)
    assert not divergences, "\n".join(divergences[:50])


def test_set_flags_output_is_read_alike_by_every_reader(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    divergences, compared, rejected_before, nameless = [], 0, 0, 0
    for name, before, flags, after in run.edits:
        for reader, readings in run.readings.items():
            old, new = readings[before], readings[after]
            if isinstance(new, str):
                divergences.append(f"{name} {flags}: {reader} rejects the edited file: {new}")
                continue
            wrong = {k: new.get(k, "<absent>") for k, v in flags.items() if new.get(k, "<absent>") != v}
            if wrong:
                divergences.append(f"{name}: {reader} reads {wrong}, wanted {flags}")
            if isinstance(old, str):  # that reader rejected the original (over a line now rewritten)
                rejected_before += 1
                continue
            others_old = {k: v for k, v in old.items() if k not in flags}
            others_new = {k: v for k, v in new.items() if k not in flags}
            changed = sorted(k for k in others_old.keys() | others_new.keys()
                             if others_old.get(k, "<absent>") != others_new.get(k, "<absent>"))
            if reader == COMPOSE_2 and changed == [""] and others_old[""] in flags:
                # compose v2 reads a bare `KEY` on the last line, without a newline, as a variable named ""
                # holding "KEY" (measured); that is the flag's own line, which the edit rewrote
                nameless += 1
            elif changed:
                divergences.append(f"{name} {flags}: {reader} changed other keys {changed}")
            compared += 1
    # Setting every agreed key (assigned once) to its agreed value is already right: the same text comes back.
    no_ops = 0
    for name, text in run.inputs:
        try:
            agreed = {k: v for k, v in agreed_values(text).items() if NAME.fullmatch(k) and settable(k, v)}
        except EnvFileError:
            continue
        for key in duplicate_keys(text, agreed):  # an earlier assignment may hold another value
            del agreed[key]
        if agreed:
            no_ops += 1
            if set_flags(text, agreed) is not text:
                divergences.append(f"{name}: setting the agreed values rewrote the file")
    edits = len(run.edits) + sum(run.refused.values())
    with capsys.disabled():
        print(f"\nset_flags: {edits} edits tried, {len(run.edits)} written ({run.unchanged} already right), "
              f"{sum(run.refused.values())} refused:")
        for why, count in run.refused.most_common():
            print(f"    {count:4}  {why}")
        print(f"  {compared} (edit, reader) pairs compared key by key ({nameless} times compose v2's nameless "
              f"variable from a flag's bare last line went away), {rejected_before} where the reader had rejected "
              f"the original; {no_ops} files re-set to their agreed values; divergences: {len(divergences)}")
    assert len(run.edits) > 100 and compared > 400, (len(run.edits), compared)
    assert not divergences, "\n".join(divergences[:50])


@pytest.mark.parametrize(("text", "key", "dotenv", "compose1", "compose2"), ISSUE)
def test_issue_measurements(run: Run, text: str, key: str, dotenv: str, compose1: str, compose2: str | None) -> None:
    """What the issue reports, as the real readers give it today; the model claims only the agreed ones."""
    i = run.texts.index(text)
    expected = {DOTENV: dotenv, COMPOSE_1: compose1, COMPOSE_2: compose2}
    for reader, value in expected.items():
        reading = run.readings[reader][i]
        assert isinstance(reading, dict), reading
        assert reading.get(key) == (value.replace("<HOME>", run.home) if value is not None else None), reader
    try:
        claims = agreed_values(text)
    except EnvFileError as error:  # the bare-CR file: refused outright
        assert "carriage return" in error.message
        return
    # claimed exactly when all three agree (the model is not merely cautious here)
    assert claims.get(key) == (dotenv if dotenv == compose1 == compose2 else None)
