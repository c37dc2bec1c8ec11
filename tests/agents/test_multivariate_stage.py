"""``[[multivariate]]`` in a spec, in a partition's batch step, in replay and in profiles."""

from __future__ import annotations

import inspect
import subprocess
import sys
import tomllib
from pathlib import Path

import orjson
import pytest

from driftline.agents.demo import ks_adwin_spec_text
from driftline.agents.metrics import WorkerMetrics
from driftline.agents.pipeline import PartitionPipeline, RawRecord
from driftline.agents.replay import build_profile, replay
from driftline.agents.runner import _multivariate_status
from driftline.agents.status_page import StatusCollector, render_html
from driftline.errors import DriftlineError, SpecError
from driftline.schemas import load_schema, validate
from driftline.spec import PipelineSpec, parse_spec
from driftline.streams.multivariate import PCAReconstructionDetector
from tests.multivariate_stream import MULTIVARIATE, flip_events, flip_spec


def _spec(extra: str = MULTIVARIATE, base_dir: Path | None = None) -> PipelineSpec:
    return parse_spec(tomllib.loads(flip_spec("mv", extra=extra)), base_dir=base_dir)


def _records(events: list[dict]) -> list[RawRecord]:
    return [RawRecord("events", 0, i, e["ts"], e["user_id"].encode(), orjson.dumps(e))
            for i, e in enumerate(events)]  # fmt: skip


def _run(pipe: PartitionPipeline, recs: list[RawRecord], size: int) -> list[dict]:
    alerts = []
    for k in range(0, len(recs), size):
        alerts += pipe.process(recs[k : k + size]).alerts
    return alerts


def _ids(alerts: list[dict]) -> list[tuple]:
    return [(a["alert_id"], a["status"], a["window"]["offset"], a["window"]["start_offset"],
             a["statistic"]) for a in alerts]  # fmt: skip


# ------------------------------------------------------------------ spec
def test_defaults_come_from_the_schema_and_match_the_constructor() -> None:
    (m,) = _spec().multivariate
    assert (m.name, m.method, m.features, m.reference_profile) == (
        "xyz_pca", "pca", ("x", "y", "z"), None)  # fmt: skip
    item = load_schema("spec")["properties"]["multivariate"]["items"]["properties"]
    sig = inspect.signature(PCAReconstructionDetector).parameters
    for key, prop in item.items():
        if "default" in prop and key != "method":
            assert sig[key].default == prop["default"], key
            if key not in ("reference_size", "window_size"):
                assert m.params[key] == prop["default"], key
    assert "stride" not in m.params and sig["stride"].default is None


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('features = ["x", "nope"]',
         "spec key multivariate[0].features[1]: 'nope' is not a numeric field, feature or batch "
         "feature of this spec; choose from"),
        ('features = ["x", "user_id"]', "spec key multivariate[0].features[1]: 'user_id' is not"),
        ('features = ["x"]', "spec key multivariate[0].features: ['x'] is too short"),
        ('features = ["x", "x"]', "spec key multivariate[0].features: ['x', 'x'] has non-unique"),
        ('features = ["x", "y"]\nmethod = "mmd"', "spec key multivariate[0].method: 'mmd' is not"),
        ('features = ["x", "y"]\nvariance = 1.5', "spec key multivariate[0].variance: 1.5 is"),
        ('features = ["x", "y"]\nalpha = 0.1', "spec key multivariate[0]: Additional properties"),
        ('features = ["x", "y"]\nwindow_size = 1000\nfalse_alarm_rate = 0.001',
         "spec key multivariate[0].false_alarm_rate: got 0.001; times stride (1000) it must stay "
         "below 1"),
        ('features = ["x", "y"]\nreference_profile = "missing.json"',
         "spec key multivariate[0].reference_profile: no profile at"),
        ('features = ["x", "y"]\nname = "amount_ks"',
         "spec key multivariate[0].name: 'amount_ks' is already the name of one of detectors"),
    ],
)  # fmt: skip
def test_spec_errors_are_one_clear_line(entry: str, message: str) -> None:
    head = '[[detectors]]\nname = "amount_ks"\ntype = "ks"\ntarget = "amount"\n'
    lines = entry.split("\n")
    if any(x.startswith("name =") for x in lines):
        body = "\n".join(lines)
    else:
        body = 'name = "m"\n' + "\n".join(lines)
    with pytest.raises(SpecError) as e:
        _spec(f"{head}\n[[multivariate]]\n{body}\n")
    text = str(e.value)
    assert "\n" not in text
    assert text.startswith(message), text


def test_two_entries_may_not_share_a_name() -> None:
    twice = MULTIVARIATE + MULTIVARIATE.replace('["x", "y", "z"]', '["x", "y"]')
    with pytest.raises(SpecError, match=r"multivariate\[1\].name: 'xyz_pca' is already"):
        _spec(twice)


# ------------------------------------------------------------------ the batch step
def test_flip_raises_one_multivariate_alert_valid_and_deterministic() -> None:
    spec = _spec()
    recs = _records(flip_events(3000, 1500))
    alerts = _run(PartitionPipeline(spec, 0, None, "none"), recs, 700)
    assert [(a["kind"], a["status"], a["detector_type"], a["target"]) for a in alerts] == [
        ("multivariate", "firing", "pca", "x,y,z")
    ]
    (a,) = alerts
    validate("alert", a)
    assert 3000 <= a["window"]["offset"] < 3000 + 250
    # the window: the 250 complete rows ending at the trigger (one event every 10 ms)
    assert a["window"]["start_offset"] == a["window"]["offset"] - 249
    assert a["window"]["start_event_time_ms"] == a["window"]["event_time_ms"] - 2490
    assert a["statistic"] > a["threshold"]
    assert a["reference"] == {"description": "first 1000 complete rows of x,y,z on partition 0",
                              "n": 1000}  # fmt: skip
    assert a["detail"].startswith("mean reconstruction error")
    # batch sizes do not matter
    again = _run(PartitionPipeline(spec, 0, None, "none"), recs, 1)
    assert _ids(again) == _ids(alerts)


def test_stationary_stream_raises_nothing() -> None:
    recs = _records(flip_events(6000, 0, seed=3))
    pipe = PartitionPipeline(_spec(), 0, None, "none")
    assert _run(pipe, recs, 1000) == []
    assert pipe.multivariate.detectors[0][1].n_evaluations == 20


@pytest.mark.parametrize("cut", [500, 1000, 3100])
def test_snapshot_and_restore_continue_identically(cut: int) -> None:
    spec = _spec()
    recs = _records(flip_events(3000, 1500, seed=1))
    expected = _run(PartitionPipeline(spec, 0, None, "none"), recs, 400)
    first = PartitionPipeline(spec, 0, None, "none")
    got = _run(first, recs[:cut], 400)
    state = orjson.loads(orjson.dumps(first.snapshot()))
    key = first.multivariate._key(spec.multivariate[0])
    assert list(state["multivariate"]["detectors"]) == list(state["multivariate"]["positions"])
    assert list(state["multivariate"]["detectors"]) == [key]
    second = PartitionPipeline(spec, 0, None, "none")
    second.restore(state)
    got += _run(second, recs[cut:], 400)
    assert _ids(got) == _ids(expected) and len(expected) == 1


def test_a_changed_definition_starts_afresh() -> None:
    spec = _spec()
    pipe = PartitionPipeline(spec, 0, None, "none")
    _run(pipe, _records(flip_events(1500, 0)), 500)
    other = PartitionPipeline(_spec(MULTIVARIATE.replace("250", "200")), 0, None, "none")
    other.restore(pipe.snapshot())
    assert other.multivariate.detectors[0][1].n_seen == 0


# ------------------------------------------------------------------ replay and profiles
@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mv") / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in flip_events(3000, 1500)))
    return path


def test_replay_writes_the_multivariate_alert(events_file: Path, tmp_path: Path) -> None:
    out, alerts = tmp_path / "f.jsonl", tmp_path / "a.jsonl"
    stats = replay(_spec(), events_file, out, alerts_path=alerts, progress=False)
    docs = [orjson.loads(line) for line in alerts.read_bytes().splitlines()]
    assert stats.alerts == 1 and [(d["kind"], d["status"]) for d in docs] == [
        ("multivariate", "firing")
    ]


def test_profile_reference_is_used_from_the_first_row(events_file: Path, tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in flip_events(4000, 0, seed=7)))
    doc = build_profile(_spec(), train, progress=False)
    validate("profile", doc)
    ref = doc["multivariate"]["xyz_pca"]
    assert ref["n"] == 4000 and len(ref["components"]) == 2 and len(ref["mean"]) == 3
    (tmp_path / "ref.json").write_bytes(orjson.dumps(doc))
    spec = _spec(MULTIVARIATE + 'reference_profile = "ref.json"\n', base_dir=tmp_path)
    pipe = PartitionPipeline(spec, 0, None, "none")
    alerts = _run(pipe, _records(flip_events(1000, 1000, seed=8)), 300)
    det = pipe.multivariate.detectors[0][1]
    assert det.n_evaluations == 8  # no reference phase: windows from the first row
    assert [a["status"] for a in alerts] == ["firing"]
    assert 1000 <= alerts[0]["window"]["offset"] < 1250
    assert alerts[0]["reference"]["description"] == "PCA reference 'xyz_pca' of profile ref.json"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"columns": {}}, "has no multivariate reference 'xyz_pca' (it has [])"),
        ({"columns": {}, "multivariate": {"xyz_pca": {"mean": [0.0]}}},
         "is not a reference profile: at multivariate/xyz_pca"),
        ("not json", "is not JSON"),
    ],
)  # fmt: skip
def test_bad_profiles_are_refused(tmp_path: Path, doc: object, message: str) -> None:
    path = tmp_path / "ref.json"
    path.write_bytes(doc.encode() if isinstance(doc, str) else orjson.dumps(doc))
    with pytest.raises(SpecError) as e:
        _spec(MULTIVARIATE + 'reference_profile = "ref.json"\n', base_dir=tmp_path)
    assert f"spec key multivariate[0].reference_profile: {path} {message}" in str(e.value)


def test_profile_of_too_few_complete_rows_says_so(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    events = flip_events(5, 0)
    train.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    with pytest.raises(DriftlineError, match="multivariate 'xyz_pca': reference: needs at least"):
        build_profile(_spec(), train, progress=False)


# ------------------------------------------------------------------ status page
class _Runner:
    """``TransactionalRunner.status`` of one real partition pipeline."""

    def __init__(self, pipe: PartitionPipeline) -> None:
        self.pipe = pipe

    def status(self) -> dict:
        dets = _multivariate_status(self.pipe, 0)
        return {"pipeline": "mv", "worker_id": "w", "input_topic": "events", "partitions": [0],
                "watermarks_ms": {0: None}, "detectors": dets}  # fmt: skip

    def recent_alerts(self) -> list:
        return []


def test_status_page_shows_the_detector_its_limits_and_state() -> None:
    pipe = PartitionPipeline(_spec(), 0, None, "none")
    (before,) = _multivariate_status(pipe, 0)
    assert (before["type"], before["target"], before["firing"]) == ("pca", "x,y,z", False)
    assert "upper" not in before["params"] and before["reference"] is None
    _run(pipe, _records(flip_events(3000, 1000)), 500)
    (st,) = _multivariate_status(pipe, 0)
    lo, hi = pipe.multivariate.detectors[0][1].limits
    assert st["firing"] and st["n_seen"] == 4000 and st["statistic"] > hi
    assert (st["params"]["components"], st["params"]["lower"], st["params"]["upper"]) == (
        2, round(lo, 4), round(hi, 4))  # fmt: skip
    col = StatusCollector(_Runner(pipe), WorkerMetrics("mv"))
    try:
        col.sample()
        page = render_html(col.snapshot())
    finally:
        col.close()
    assert "xyz_pca" in page and "FIRING" in page and f"upper={round(hi, 4)}" in page


def test_the_readme_example_is_a_valid_entry() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Multivariate drift (`[[multivariate]]`)", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    data = tomllib.loads(ks_adwin_spec_text())
    del data["model"]
    data["multivariate"] = tomllib.loads(example)["multivariate"]
    (m,) = parse_spec(data).multivariate
    assert (m.name, m.features) == ("payment_shape", ("amount", "latency_ms", "amount_mean_1m"))
    assert m.params == {"reference_size": 2000, "variance": 0.65, "window_size": 500,
                        "false_alarm_rate": 1e-6, "n_confirm": 1, "n_clear": 3,
                        "cooldown": 0}  # fmt: skip


# ------------------------------------------------------------------ the command line
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "driftline.cli", *args], capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_cli_profile_then_validate_and_a_bad_entry(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in flip_events(3000, 0, seed=2)))
    spec = tmp_path / "pipeline.toml"
    spec.write_text(flip_spec("mv"))
    r = _cli("profile", "-c", str(spec), "--input", str(train), "--output",
             str(tmp_path / "ref.json"), "--no-progress")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "multivariate xyz_pca: PCA reference on 3000 complete rows, 2 of 3 components kept" in (
        r.stdout
    )
    spec.write_text(flip_spec("mv", extra=MULTIVARIATE + 'reference_profile = "ref.json"\n'))
    assert _cli("validate", "-c", str(spec)).returncode == 0
    spec.write_text(flip_spec("mv", extra=MULTIVARIATE.replace('"z"', '"w"')))
    r = _cli("validate", "-c", str(spec))
    assert r.returncode == 2 and r.stderr.splitlines() == [
        "driftline: error: spec key multivariate[0].features[2]: 'w' is not a numeric field, "
        "feature or batch feature of this spec; choose from ['amount', 'x', 'y', 'z', "
        "'amount_sum']"
    ]
