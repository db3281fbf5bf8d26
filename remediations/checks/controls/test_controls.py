"""wsguard's compliance controls as a pytest suite: one test per host x control.

    pytest remediations/checks/controls --inventory .lab/inventory.yml [--limit lab1] [--probe] \
        --junitxml verify.xml [-n auto]

The very same controls as `invoke verify` (remediations/checks/controls/catalog.py), judged the same way.
"""

from __future__ import annotations

from typing import Any

import pytest

from remediations.model.results import show


def test_control(control: dict[str, Any]) -> None:
    if control["status"] == "skipped":
        pytest.skip(control.get("detail") or "not applicable")
    if control["status"] != "pass":
        pytest.fail(f"{control['id']} ({control['impact']}): {control['title']}\n"
                    f"  expected: {show(control['expected'])}\n  actual:   {show(control['actual'])}"
                    + (f"\n  {control['detail']}" if control.get("detail") else ""), pytrace=False)
