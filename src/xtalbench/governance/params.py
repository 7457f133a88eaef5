"""The `gates:` section: a list of regression-gate rules.

`xtalbench.governance.gates.Gate.from_dict` validates each rule strictly (unknown keys, types,
directions, negative tolerances, duplicate names: a `GateError` naming the rule and the key);
this module registers it as the section's loader.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xtalbench.core.params import PARAMS_FILE


def load(params: Mapping[str, Any], file: str = PARAMS_FILE) -> list[Any]:
    """The parsed gates (`list[Gate]`)."""
    from xtalbench.governance.gates import parse_gates

    return parse_gates(params)
