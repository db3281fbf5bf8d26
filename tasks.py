"""wsguard's invoke tasks in this checkout: the product's (remediations/cli, the same as the `wsguard`
command) plus the lab's (`invoke lab.*`, test and demo infrastructure in lab/)."""

from __future__ import annotations

from lab.tasks import NAMESPACE as LAB
from remediations.cli.program import collection

ns = collection()
ns.add_collection(LAB[1], name=LAB[0])
