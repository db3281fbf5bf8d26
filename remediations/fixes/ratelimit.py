"""fix-rate-limit: the app's `.env` flags, and a container RECREATED so it really holds them.

`docker-compose restart` keeps the container and its old environment (seen on the lab); only a recreate
(`up -d --no-deps SERVICE`) applies an edited `.env`. So the handler runs when the file changed, when
the running container's env differs from the flags (a file fixed but never applied), or when a
previous run left the handler pending.
"""

from __future__ import annotations

from typing import Any

from remediations.edit.envfile import duplicate_keys, set_flags
from remediations.edit.secrets import learn_env_text
from remediations.fixes.plan import FileChange, Plan
from remediations.model.errors import EnvFileError
from remediations.model.facts import Facts, file_fact
from remediations.model.inventory import Host
from remediations.model.masking import MASK, Masker, is_secret_key


def compose_handler(host: Host, flags: dict[str, str], reason: str) -> dict[str, Any]:
    ws = host.ws
    return {"name": "compose_recreate", "app_dir": ws.app_dir, "service": ws.compose_service,
            "container": ws.backend_container, "expect_env": flags, "reason": reason}


class RateLimitFix:
    task = "fix-rate-limit"

    def __init__(self, host: Host, flags: dict[str, str] | None = None, restart: bool = True) -> None:
        self.host = host
        self.flags = dict(flags if flags is not None else host.ws.env_flags)
        self.restart = restart

    def facts_request(self) -> dict[str, Any]:
        return {"files": [self.host.ws.env_file], "container": self.host.ws.backend_container,
                "journal": {}}

    def plan(self, facts: Facts, masker: Masker) -> Plan:
        ws, name = self.host.ws, self.host.name
        f = file_fact(facts, ws.env_file, name, "the app's .env",
                      hint="set env_file (or app_dir) for this host in the inventory, or create the file")
        old = f.data
        try:
            text = old.decode("utf-8")
        except UnicodeDecodeError:
            raise EnvFileError(f"{name}: {ws.env_file} is not UTF-8 text", hint="fix the file's encoding") from None
        # The file as it is and as it will be, spelled as written (escapes, every line): the new text
        # holds the inventory's values too (a token being rotated is a secret before it is written).
        learn_env_text(masker, text)
        env = facts.container_env()
        if env is not None:
            masker.add_env(env)
        new_text = set_flags(text, self.flags)
        learn_env_text(masker, new_text)
        new = new_text.encode("utf-8")
        plan = Plan(files=[FileChange(ws.env_file, old, new, f.sha256 or "")])
        plan.warnings += [f"{ws.env_file}: {k} is assigned more than once; every assignment was set"
                          for k in duplicate_keys(text, self.flags)]
        running = {k: (env or {}).get(k) for k in self.flags}
        stale = env is None or any(running[k] != v for k, v in self.flags.items())
        plan.evidence = {"env_file": ws.env_file, "container": ws.backend_container,
                         "container_id": facts.container.id if facts.container else None,
                         "container_env": running}
        reasons = []
        if old != new:
            reasons.append(".env changed")
        if stale:
            reasons.append("the running container does not hold the flags" if env is not None
                           else "the container does not exist")
        if "compose_recreate" in facts.pending:
            reasons.append("a previous run left the recreate pending")
        if not reasons:
            plan.nothing_to_do.append(self._in_place())
        elif self.restart:
            plan.handlers.append(compose_handler(self.host, self.flags, "; ".join(reasons)))
        else:
            plan.warnings.append(f"--no-restart: {ws.backend_container} still runs with the OLD values "
                                 f"until it is recreated (`docker-compose up -d --no-deps {ws.compose_service}`)")
        return plan

    def _in_place(self) -> str:
        if not self.flags:
            return "no env_flags to set"
        # Said before the masker runs, so a secret-looking flag never depends on the masker having learnt it.
        shown = ", ".join(f"{k}={MASK if is_secret_key(k) else v}" for k, v in self.flags.items())
        return f"{shown} already set in {self.host.ws.env_file}; the container holds them"
