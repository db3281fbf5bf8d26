"""wsguard's invoke tasks: thin wrappers that parse flags and call remediations/.

Each module remediations/cli/*_tasks.py contributes either TASKS (top-level tasks) or NAMESPACE
(a named collection such as `lab`); this file only assembles them.
"""

from __future__ import annotations

import importlib
import pkgutil

from invoke import Collection

import remediations.cli

ns = Collection()
for info in sorted(pkgutil.iter_modules(remediations.cli.__path__), key=lambda m: m.name):
    if info.name.endswith("_tasks"):
        module = importlib.import_module(f"remediations.cli.{info.name}")
        for t in getattr(module, "TASKS", []):
            ns.add_task(t)
        if hasattr(module, "NAMESPACE"):
            name, collection = module.NAMESPACE
            ns.add_collection(collection, name=name)
