"""wsguard's invoke tasks in this checkout: the product's (remediations/cli, the same as the `wsguard`
command) plus the lab's (`invoke lab.*`, test and demo infrastructure in lab/)."""

from __future__ import annotations

import invoke.collection

from lab.tasks import NAMESPACE as LAB
from remediations.cli.flags import TypedContext
from remediations.cli.program import collection

# invoke copies this namespace into a plain Collection, whose parser contexts name only STRING and INT in
# --help: the checkout's `invoke --help TASK` names FLOAT and the rest as `wsguard --help TASK` does.
invoke.collection.ParserContext = TypedContext  # type: ignore[misc]

ns = collection()
ns.add_collection(LAB[1], name=LAB[0])
