"""wsguard's invoke tasks: thin wrappers that parse flags and call remediations/."""

from __future__ import annotations

from invoke import Collection

from remediations.cli import fix_tasks, lab_tasks

ns = Collection(fix_tasks.fix_rate_limit, fix_tasks.fix_nginx)
ns.add_collection(lab_tasks.ns, name="lab")
