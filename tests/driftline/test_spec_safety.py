"""Configuration that cannot hurt: topics that cannot feed back into the pipeline, bounded values,
a web address that exists, and one clear error for whatever a spec file or the files it names
hold (binary data, bad UTF-8, deep nesting, broken models and reference profiles)."""

from __future__ import annotations

import io
import pickle
import tomllib
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from river import linear_model, tree

from driftline.agents.demo import ks_adwin_spec_text
from driftline.cli import EXIT_USAGE, main
from driftline.errors import SpecError
from driftline.model_io import FORMAT, save_model
from driftline.spec import MAX_SPEC_BYTES, changelog_topic_of, load_spec, parse_spec
from driftline.streams.model import build_builtin
from driftline.streams.profile import Profile

TOPIC_KEYS = [
    ("output", "features_topic"),
    ("output", "predictions_topic"),
    ("output", "alerts_topic"),
    ("output", "dlq_topic"),
    ("output", "late_topic"),
    ("output", "model_metrics_topic"),
    ("labels", "topic"),
    ("batch_features", "topic"),
]


@pytest.fixture
def base() -> dict[str, Any]:
    """The demo spec with [labels] and [batch_features], so every topic key is present."""
    data = tomllib.loads(ks_adwin_spec_text())
    data["labels"] = {"topic": "driftline.labels"}
    data["batch_features"] = {"topic": "driftline.batch", "fields": {"score_30d": "float"}}
    return data


def _parse(data: dict[str, Any], tmp_path: Path) -> Any:
    return parse_spec(data, base_dir=tmp_path, model_file_required=False)


def _put(data: dict[str, Any], section: str, key: str, value: Any) -> None:
    data.setdefault(section, {})[key] = value


def test_the_base_spec_is_valid(base: dict[str, Any], tmp_path: Path) -> None:
    spec = _parse(base, tmp_path)
    assert spec.changelog_topic == "driftline.demo.state-changelog" == changelog_topic_of("demo")


@pytest.mark.parametrize(("section", "key"), TOPIC_KEYS)
def test_no_topic_may_be_the_input_topic(
    base: dict[str, Any], tmp_path: Path, section: str, key: str
) -> None:
    _put(base, section, key, base["input"]["topic"])
    with pytest.raises(SpecError) as e:
        _parse(base, tmp_path)
    assert str(e.value) == (
        f"spec key {section}.{key}: topic 'driftline.demo.events' is also spec key input.topic; "
        "every topic the pipeline reads or writes must be its own: give it another name"
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [(a, b) for i, a in enumerate(TOPIC_KEYS) for b in TOPIC_KEYS[i + 1 :]],
    ids=lambda k: ".".join(k),
)
def test_no_two_topics_may_be_the_same(
    base: dict[str, Any], tmp_path: Path, first: tuple[str, str], second: tuple[str, str]
) -> None:
    _put(base, *first, "shared.topic")
    _put(base, *second, "shared.topic")
    with pytest.raises(SpecError) as e:
        _parse(base, tmp_path)
    assert str(e.value).startswith(
        f"spec key {'.'.join(second)}: topic 'shared.topic' is also spec key {'.'.join(first)};"
    )


def test_an_output_default_counts_too(base: dict[str, Any], tmp_path: Path) -> None:
    """An output left at its default may not be named for another key."""
    del base["output"]
    base["labels"]["topic"] = "driftline.dlq"  # output.dlq_topic's default
    with pytest.raises(SpecError, match=r"spec key output\.dlq_topic: topic 'driftline\.dlq'"):
        _parse(base, tmp_path)


def test_no_topic_may_be_the_hosts_leader_topic(base: dict[str, Any], tmp_path: Path) -> None:
    base["output"]["late_topic"] = "driftline.demo.host-__assignor-__leader"
    with pytest.raises(SpecError) as e:
        _parse(base, tmp_path)
    assert str(e.value).startswith(
        "spec key output.late_topic: topic 'driftline.demo.host-__assignor-__leader' is also the "
        "worker host's leader topic (faust's);"
    )


def test_no_topic_may_be_the_state_changelog(base: dict[str, Any], tmp_path: Path) -> None:
    base["output"]["alerts_topic"] = "driftline.demo.state-changelog"
    with pytest.raises(SpecError) as e:
        _parse(base, tmp_path)
    assert str(e.value).startswith(
        "spec key output.alerts_topic: topic 'driftline.demo.state-changelog' is also the "
        "pipeline's state changelog;"
    )


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("features", "window_ms", 99999999999999999999, "greater than the maximum"),
        ("features", "window_ms", 315_360_000_001, "greater than the maximum of 315360000000"),
        ("features", "window_ms", -1, "less than the minimum of 1"),
        ("features", "window_ms", 6.5, "is not of type 'integer'"),
        ("features", "window_ms", "60s", "is not of type 'integer'"),
        ("windows", "grace_ms", 10**30, "greater than the maximum"),
        ("input", "max_message_bytes", 2**40, "greater than the maximum of 104857600"),
        ("worker", "web_port", 0, "less than the minimum of 1"),
        ("worker", "web_port", 65536, "greater than the maximum of 65535"),
        ("worker", "web_port", "6066", "is not of type 'integer'"),
        ("worker", "web_host", "", "should be non-empty"),
        ("worker", "web_host", "local host", "does not match"),
        ("worker", "web_host", "999.1.1.1", "not an IP address or a host name"),
        ("worker", "web_host", "-bad-.example", "not an IP address or a host name"),
        ("worker", "web_host", "a" * 64, "not an IP address or a host name"),
        ("output", "dlq_topic", ".", "Expected: A Kafka topic name"),
        ("output", "late_topic", "..", "Expected: A Kafka topic name"),
        ("output", "alerts_topic", "a" * 250, "does not match"),
        ("labels", "ttl_ms", 10**20, "greater than the maximum"),
        ("labels", "max_pending", 10**12, "greater than the maximum"),
        ("detectors", "alpha", "tiny", "spec key detectors[0].alpha: got 'tiny'"),
        ("detectors", "alpha", float("nan"), "spec key detectors[0].alpha: got nan"),
        ("detectors", "window_size", 10**14, "expected an integer between 1 and 10000000"),
        ("detectors", "window_size", 10**20, "greater than the maximum of 1000000000000000"),
        ("detectors", "reference_size", True, "expected an integer between 1 and 10000000"),
    ],
)
def test_values_are_typed_and_bounded(
    base: dict[str, Any], tmp_path: Path, section: str, key: str, value: Any, message: str
) -> None:
    if section in ("features", "detectors"):
        base[section][0][key] = value
    else:
        _put(base, section, key, value)
    with pytest.raises(SpecError) as e:
        _parse(base, tmp_path)
    assert message in str(e.value)
    where = f"{section}[0].{key}" if section in ("features", "detectors") else f"{section}.{key}"
    assert str(e.value).startswith(f"spec key {where}:")


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "0.0.0.0", "::1", "::", "localhost", "worker-1.internal", "10.1.2.3"]
)
def test_web_hosts_that_exist_are_accepted(base: dict[str, Any], tmp_path: Path, host: str) -> None:
    base["worker"]["web_host"] = host
    assert _parse(base, tmp_path).worker.web_host == host


def _validate(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["validate", "-c", str(path)])
    return code, out.getvalue(), err.getvalue()


def _one_error(path: Path) -> str:
    code, out, err = _validate(path)
    assert code == EXIT_USAGE, (out, err)
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("driftline: error: ")
    return err.removeprefix("driftline: error: ").rstrip("\n")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\xff\xfe\x80 binary", "is not UTF-8 text (line 1, byte offset 1: b'\\xff')"),
        (
            b'[pipeline]\nname = "d\xc3\x28"\n',
            "is not UTF-8 text (line 2, byte offset 20: b'\\xc3')",
        ),
        (b"\x00\x01\x02", "is not valid TOML"),
        (b'x = "\\ud800"\n', "is not valid TOML"),
        (b"x = " + b"[" * 5000 + b"]" * 5000, "nests arrays or tables more than 16 deep"),
        (b"x = " + b"{a = " * 3000 + b"1" + b"}" * 3000, "nests arrays or tables more than 16"),
        (b"x = " + b"[" * 40 + b"]" * 40, "spec key x" + "[0]" * 16 + ": nested more than 16"),
        (b"a = 1\n" * (MAX_SPEC_BYTES // 6 + 1), "is larger than 1024 KiB"),
        (b"", "spec key (top level): 'pipeline' is a required property"),
    ],
    ids=[
        "binary",
        "bad-utf8",
        "control",
        "surrogate",
        "deep-array",
        "deep-table",
        "deep-parsed",
        "huge",
        "empty",
    ],
)
def test_whatever_the_file_holds_one_clear_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "p.toml"
    path.write_bytes(content)
    assert message in _one_error(path)


def test_a_directory_is_not_a_spec(tmp_path: Path) -> None:
    assert _one_error(tmp_path).startswith(f"cannot read spec file {tmp_path}: Is a directory")


# -- validate loads the model as the worker would --------------------------------------------------
def _legacy_doc(model: Any) -> bytes:
    """A model file of the first layout (a pickled dict, no checksum)."""
    return pickle.dumps({"format": FORMAT, "version": "v1", "model": pickle.dumps(model)})


class _Unscorable(linear_model.LinearRegression):
    """A river regressor that fails to score (pickled by reference to this module)."""

    def predict_one(self, x: dict, **kw: Any) -> float:
        raise ZeroDivisionError("no")


GOOD = "good"
MODELS: list[tuple[str, Any, bool, str]] = [
    ("good", GOOD, False, ""),
    ("good-learn", GOOD, True, ""),
    ("truncated-header", "truncated:40", False, "is a damaged driftline model file (its header)"),
    ("truncated", "truncated:-5", False, "bytes of model where it says"),
    ("flipped", "flipped", False, "is a damaged driftline model file: its checksum does not match"),
    ("legacy-truncated", _legacy_doc(build_builtin("linear_regression"))[:60], False,
     "(UnpicklingError: pickle data was truncated)"),
    ("legacy-good", _legacy_doc(build_builtin("linear_regression")), False, ""),
    ("empty", b"", False, "(EOFError: Ran out of input)"),
    ("garbage", b"not a pickle at all", False, "cannot load model"),
    ("other-pickle", pickle.dumps([1, 2, 3]), False, "is not a driftline model file"),
    ("no-model", pickle.dumps({"format": FORMAT, "version": "v"}), False, "damaged driftline"),
    ("inner-garbage", pickle.dumps({"format": FORMAT, "version": "v", "model": b"\x80\x04xx"}),
     False, "was it saved with another river version?"),
    ("not-river", _legacy_doc({"weights": [1.0]}), False,
     "got a dict; expected a river classifier or regressor"),
    ("not-a-predictor", _legacy_doc(build_builtin("linear_regression")[0]), False,
     "got a StandardScaler; expected a river classifier or regressor"),
    ("cannot-score", _legacy_doc(_Unscorable()), False,
     "a _Unscorable that cannot score a row of its 3 inputs (ZeroDivisionError: no)"),
    ("not-learnable", _legacy_doc(tree.HoeffdingTreeClassifier()), True,
     "labels.learn = true: the model (HoeffdingTreeClassifier) cannot be saved"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "content", "learn", "message"), MODELS, ids=[m[0] for m in MODELS]
)
def test_validate_loads_the_model(
    tmp_path: Path, what: str, content: Any, learn: bool, message: str
) -> None:
    model = tmp_path / "demo-model.pkl"
    save_model(build_builtin("logistic_regression"), model)
    if isinstance(content, str) and content.startswith("truncated:"):
        content = model.read_bytes()[: int(content.split(":")[1])]
    elif content == "flipped":
        good = bytearray(model.read_bytes())
        good[-10] ^= 4
        content = bytes(good)
    if content != GOOD:
        model.write_bytes(content)
    spec = tmp_path / "p.toml"
    spec.write_text(ks_adwin_spec_text() + ("\n[labels]\nlearn = true\n" if learn else ""))
    if not message:
        code, out, err = _validate(spec)
        assert (code, err) == (0, "") and "valid pipeline 'demo'" in out
        return
    err = _one_error(spec)
    assert err.startswith("spec key model.path: ") and message in err


# -- reference profiles --------------------------------------------------------------------------
def _profile(values: np.ndarray) -> dict[str, Any]:
    return {"format": "driftline-profile/1", "pipeline": "demo", "events": len(values),
            "columns": {"amount": Profile.from_values(values).to_dict()}}  # fmt: skip


PROFILES: list[tuple[str, bytes, str]] = [
    ("binary", b"\x00\xff\x01", "is not JSON"),
    ("a-list", b"[1, 2, 3]", "is not a reference profile: at (top level)"),
    ("no-column", orjson.dumps({"columns": {"other": {"kind": "numeric"}}}),
     "has no column 'amount' (it has ['other'])"),
    ("bad-kind", orjson.dumps({"columns": {"amount": {"kind": "weird"}}}),
     "is not a reference profile: at columns/amount/kind"),
    ("strings", orjson.dumps({"columns": {"amount": {"kind": "numeric", "quantiles": ["a"]}}}),
     "is not a reference profile: at columns/amount/quantiles/0"),
    ("unknown-key", orjson.dumps({"columns": {"amount": {"kind": "numeric", "x": 1}}}),
     "is not a reference profile"),
    ("descending", orjson.dumps({"columns": {"amount": {"kind": "numeric", "count": 2,
                                                        "quantiles": [2.0, 1.0]}}}),
     "the quantiles of 'amount' are not ascending"),
    ("empty", orjson.dumps({"columns": {"amount": {"kind": "numeric"}}}),
     "cannot be the ks detector's reference for 'amount'"),
    ("categorical", orjson.dumps(_profile(np.array(["a", "b"], dtype=object))),
     "cannot be the ks detector's reference"),
    ("deep", b"[" * 100_000 + b"]" * 100_000, "is not JSON"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "content", "message"), PROFILES, ids=[p[0] for p in PROFILES])
def test_a_broken_reference_profile_is_one_clear_error(
    tmp_path: Path, what: str, content: bytes, message: str
) -> None:
    save_model(build_builtin("logistic_regression"), tmp_path / "demo-model.pkl")
    (tmp_path / "ref.json").write_bytes(content)
    data = ks_adwin_spec_text().replace(
        'type = "ks"\n', 'type = "ks"\nreference_profile = "ref.json"\n', 1
    )
    spec = tmp_path / "p.toml"
    spec.write_text(data)
    err = _one_error(spec)
    assert err.startswith(f"spec key detectors[0].reference_profile: {tmp_path / 'ref.json'} ")
    assert message in err


def test_a_good_reference_profile_is_accepted(tmp_path: Path) -> None:
    save_model(build_builtin("logistic_regression"), tmp_path / "demo-model.pkl")
    doc = _profile(np.random.default_rng(0).normal(size=500))
    (tmp_path / "ref.json").write_bytes(orjson.dumps(doc))
    spec = tmp_path / "p.toml"
    spec.write_text(
        ks_adwin_spec_text().replace(
            'type = "ks"\n', 'type = "ks"\nreference_profile = "ref.json"\n'
        )
    )
    assert load_spec(spec).detectors[0].reference_profile == tmp_path / "ref.json"
    assert _validate(spec)[0] == 0
