"""Compliance controls for `invoke verify`, written with testinfra on wsguard's own transport.

- backend.py: the testinfra backend over `Transport` (strict host keys, sudo, timeouts).
- catalog.py: the controls (id, title, impact, check) and the one facts request they share.
- conftest.py + test_controls.py: the same controls as a plain pytest suite (JUnit, xdist for free):

    pytest remediations/checks/controls --inventory .lab/inventory.yml [--limit lab1,lab2] [--probe]
"""

from remediations.checks.controls.catalog import CONTROLS, Control, Outcome, VerifyOptions

__all__ = ["CONTROLS", "Control", "Outcome", "VerifyOptions"]
