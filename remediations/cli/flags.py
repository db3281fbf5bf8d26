"""The tasks' flags, declared once: a row per flag (type, default, range, help) and one parse step into a
typed RunFlags; and the invoke glue that types them on the command line.

invoke takes a flag's type from its default's type, casts with int()/float() (a traceback on `--forks abc`),
and names only STRING and INT in --help. Here each flag's Argument checks the text itself, so a bad value is
one line under `wsguard` and `invoke` alike, and --help names FLOAT and the flag's own kind of value.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from invoke import Collection, Context, Task
from invoke.exceptions import ParseError
from invoke.parser import Argument, ParserContext

from remediations.cli.common import DEFAULT_MAXIMUM, fail_on_error, number, one_line, shown, whole
from remediations.model.errors import RemediationError

if TYPE_CHECKING:  # the layers below are imported when a task runs (see cli/__init__.py)
    from remediations.model.inventory import Host
    from remediations.run.fleet import Rollout
    from remediations.run.runner import Connect
    from remediations.run.transaction import Options


@dataclass(frozen=True)
class Flag:
    """One flag: `name` is the task's parameter (connect_timeout), --connect-timeout on the command line."""

    name: str
    kind: type  # bool, int, float, str or list (repeatable): what the body gets
    default: Any
    help: str
    minimum: float = 0
    maximum: float = DEFAULT_MAXIMUM  # past it a number is a typo: a timer or a pool never gets one
    metavar: str = ""  # the value's name in --help (default INT, FLOAT, STRING)
    default_help: str = ""  # the default in words, when its value alone would not say it
    validate: Callable[[str], object] | None = None  # a text flag's own check (raises RemediationError)
    multiline: bool = False  # text flags are one line unless this says otherwise

    @property
    def value_name(self) -> str:
        return self.metavar or {int: "INT", float: "FLOAT"}.get(self.kind, "STRING")

    @property
    def full_help(self) -> str:
        if self.default_help:
            return f"{self.help} (default: {self.default_help})"
        if self.default is None or self.kind is bool:
            return self.help
        return f"{self.help} (default {shown(self.default) if self.kind in (int, float) else self.default})"

    def check(self, value: Any) -> Any:
        """The value, typed and checked, or a RemediationError saying what the flag takes and what it got."""
        if self.kind is bool:
            return bool(value)
        if value is None or self.kind is list:
            return value
        if self.kind is int:
            return whole(self.name, value, minimum=int(self.minimum), maximum=int(self.maximum))
        if self.kind is float:
            return number(self.name, value, minimum=self.minimum, maximum=self.maximum)
        text = str(value)
        if not self.multiline:
            one_line(self.name, text)
        if self.validate:
            self.validate(text)
        return text


def _serial(text: str) -> None:
    from remediations.run.fleet import parse_serial

    parse_serial(text)


def _max_fail_percent(text: str) -> None:
    from remediations.run.fleet import parse_max_fail_percent

    parse_max_fail_percent(text)


def _shard(text: str) -> None:
    from remediations.model.inventory import shard

    shard([], text)  # no hosts: only the spec is checked


# The flags the remote tasks share (docs/ARCHITECTURE.md, "Conventions"); RunFlags has one field for each.
SHARED: dict[str, Flag] = {f.name: f for f in (
    Flag("inventory", str, None, "inventory file or dir (YAML, INI, ansible-inventory JSON), or - for stdin",
         metavar="PATH",
         default_help="inventory/ or $WSGUARD_INVENTORY; the lab's: .lab/inventory.yml"),
    Flag("limit", str, None, "hosts or groups: names, globs, comma lists, !exclude", metavar="PATTERN"),
    Flag("connect_timeout", float, 10.0, "seconds to connect to a host", minimum=0.1, maximum=3600),
    Flag("timeout", float, 60.0, "seconds for each remote step", minimum=0.1, maximum=86400),
    Flag("forks", int, 10, "hosts worked on at once", minimum=1, maximum=1000),
    Flag("accept_new_host_keys", bool, False,
         "trust and record keys of hosts not in known_hosts (never a changed key)"),
    Flag("lock_timeout", float, 30.0, "seconds to wait for another run's host lock", maximum=86400),
    Flag("serial", str, None, "rolling batches: N hosts, N% of the selection, or a list (1,2,25%; the last repeats); "
         "after each batch the changed hosts pass a health gate (effects confirmed + a 101 upgrade)",
         metavar="BATCHES", validate=_serial),
    Flag("canary", bool, False, "a first batch of exactly one host, then --serial (or all the rest)"),
    Flag("max_fail_percent", str, None, "start no new batch once failed+unreachable hosts exceed P% of the "
         "selection (0: stop at the first); hosts not started are reported skipped, exit 1", metavar="P",
         default_help="stop only when every host of a batch failed", validate=_max_fail_percent),
    Flag("shard", str, None, "only the K-th of N disjoint, deterministic slices of the selected hosts",
         metavar="K/N", validate=_shard),
    Flag("json", bool, False, "print one JSON document on stdout and nothing else there"),
    Flag("check", bool, False, "change nothing; report what would change (exit 2 if anything would)"),
    Flag("diff", bool, False, "print unified diffs (secret values masked)"),
)}

# The shared flags every remote task takes, and those of the tasks that change a fleet.
REMOTE = ("inventory", "limit", "json", "connect_timeout", "timeout", "forks", "accept_new_host_keys")
FLEET = (*REMOTE, "check", "diff", "lock_timeout", "serial", "canary", "max_fail_percent", "shard")


@dataclass(frozen=True)
class RunFlags:
    """The shared flags of one task run, checked and typed; a flag the task does not take has its default."""

    inventory: str | None
    limit: str | None
    connect_timeout: float
    timeout: float
    forks: int
    accept_new_host_keys: bool
    lock_timeout: float
    serial: str | None
    canary: bool
    max_fail_percent: str | None
    shard: str | None
    json: bool
    check: bool
    diff: bool

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> RunFlags:
        """The one parse step: each value through its row's check (a RemediationError on a bad one)."""
        return cls(**{f.name: f.check(values.get(f.name, f.default)) for f in SHARED.values()})

    def hosts(self) -> list[Host]:
        """The inventory's hosts that --limit selects, then --shard's slice of them."""
        from remediations.model.inventory import load_inventory, resolve_inventory_path, shard

        hosts = load_inventory(resolve_inventory_path(self.inventory)).select(self.limit)
        return shard(hosts, self.shard) if self.shard else hosts

    def connect(self) -> Connect:
        from remediations.run.runner import Connect

        return Connect(self.connect_timeout, self.timeout, self.accept_new_host_keys, self.forks)

    def rollout(self) -> Rollout:
        from remediations.run.fleet import Rollout, parse_max_fail_percent, parse_serial

        return Rollout(parse_serial(self.serial), self.canary, parse_max_fail_percent(self.max_fail_percent),
                       self.shard or None)

    def transaction(self) -> Options:
        """The transaction's options; WSGUARD_TEST_PAUSE widens the window before the rename (fault tests)."""
        from remediations.run.transaction import Options

        return Options(check=self.check, diff=self.diff, lock_timeout=self.lock_timeout,
                       pause_before_rename=float(os.environ.get("WSGUARD_TEST_PAUSE", "0")))


# -- invoke ---------------------------------------------------------------------------------------

class FlagError(ParseError):
    """A flag value refused while invoke parses the command line; both programs print it as it is."""


class FlagArgument(Argument):
    """invoke's Argument for a Flag: the text is checked by the flag's row, not cast by int()/float()."""

    def __init__(self, flag: Flag, **kwargs: Any) -> None:
        super().__init__(kind=flag.kind, **kwargs)
        self.flag = flag

    def set_value(self, value: Any, cast: bool = True) -> None:
        if cast and self.flag.kind not in (bool, list):
            try:
                value = self.flag.check(value)
            except RemediationError as exc:
                hint = f"\n  hint: {exc.hint}" if exc.hint else ""
                raise FlagError(f"error: {exc.message}{hint}") from None
            cast = False
        super().set_value(value, cast=cast)


class FlagTask(Task):
    """A task whose Arguments are FlagArguments, from its rows."""

    flags: dict[str, Flag]

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Argument]:
        args: list[Argument] = []
        for a in super().get_arguments(ignore_unknown_help):
            row = self.flags[str(a.name)]
            args.append(FlagArgument(row, names=a.names, default=a.default, help=row.full_help,
                                     positional=a.positional, optional=a.optional, attr_name=a.attr_name))
        return args


class TypedContext(ParserContext):
    """invoke's parser context, naming a flag's value in --help as its row does (invoke knows only STRING and
    INT, and shows any other typed flag as if it were a switch)."""

    def help_for(self, flag: str) -> tuple[str, str]:
        names, text = super().help_for(flag)
        row = getattr(self.flags[flag], "flag", None)
        if not isinstance(row, Flag) or row.kind is bool:
            return names, text
        spec = [f"{n} {row.value_name}" if len(n.strip("-")) == 1 else f"{n}={row.value_name}"
                for n in self.names_for(flag)]
        return ", ".join(sorted(spec, key=len)), text


class FlagCollection(Collection):
    """A Collection whose parser contexts are TypedContexts (the `wsguard` program's)."""

    def to_contexts(self, ignore_unknown_help: bool | None = None) -> list[ParserContext]:
        return [TypedContext(name=name, aliases=aliases, args=self[name].get_arguments(ignore_unknown_help))
                for name, aliases in self.task_names.items()]


def flag_task(*shared: str, own: Sequence[Flag] = (), help: Mapping[str, str] | None = None,
              **options: Any) -> Callable[[Callable[..., None]], FlagTask]:
    """An invoke task taking the SHARED flags named and its `own` rows (`help` replaces a row's help for
    this task). Its body is called as body(c, RunFlags, **own values), every value checked; a bad one, or
    a RemediationError, is a message and a hint on stderr and exit 1."""
    rows = [SHARED[n] for n in shared] + list(own)
    if set(help or ()) - {f.name for f in rows}:
        raise ValueError(f"help for flags the task does not take: {sorted(set(help or ()) - {f.name for f in rows})}")
    rows = [replace(f, help=help[f.name]) if help and f.name in help else f for f in rows]

    def decorate(body: Callable[..., None]) -> FlagTask:
        @functools.wraps(body)
        def run(c: Context, **values: Any) -> None:
            flags = RunFlags.parse({n: values[n] for n in shared})
            body(c, flags, **{f.name: f.check(values[f.name]) for f in own})

        # invoke reads a task's flags from its signature: this one is made from the rows.
        run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
            + [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default) for f in rows])
        t = FlagTask(fail_on_error(run), auto_shortflags=False, iterable=[f.name for f in rows if f.kind is list],
                     **options)
        t.flags = {f.name: f for f in rows}
        return t

    return decorate
