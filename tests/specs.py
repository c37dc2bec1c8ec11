"""The smallest valid pipeline spec (one input, one feature), for tests that need a spec file
but not the demo's model and detectors."""

from __future__ import annotations


def minimal_spec(name: str, topic: str = "events", extra: str = "") -> str:
    """TOML of a pipeline ``name`` reading ``topic`` with one 1-minute sum feature; ``extra`` is
    appended (more sections, e.g. ``[worker]``)."""
    return f"""
[pipeline]
name = "{name}"

[input]
topic = "{topic}"
key_field = "user_id"
time_field = "ts"

[input.fields]
user_id = "string"
ts = "timestamp"
amount = "float"

[[features]]
name = "amount_sum"
field = "amount"
agg = "sum"
window_ms = 60000
{extra}"""
