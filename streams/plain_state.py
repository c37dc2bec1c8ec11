"""Plain-data state of the river objects in driftline's snapshots: drift detectors, online models.

A snapshot holds numbers, strings, booleans, lists and dicts only, never a pickle. A restore builds
the known class from hyperparameters driftline already has (the detector's, the configured
model's), then sets state fields read one by one from an allowlist per class, each type-checked.
An unknown class, a missing or extra field, a value of the wrong type or out of range is a
`DriftlineError`: nothing in a snapshot names a class to build or code to run.

How river 0.26.1 implements what is encoded here, and how each is restored:

- ``drift.PageHinkley``, ``drift.binary.DDM``, ``drift.binary.HDDMA``: pure Python over
  ``stats.Mean`` (Python). Fields are set on a fresh instance.
- ``drift.binary.HDDMW``: Python, its EWMAs are ``stats.EWMean`` around a Rust ``RsEWMean``.
  Fields are set on fresh ``SampleInfo`` objects; an EWMA that has seen a value is re-seeded
  through its public ``update`` (river stores the first value as is, so this is exact).
- ``drift.ADWIN``: the window lives in a Rust ``AdaptiveWindowing``. Its bucket lists are stored
  as plain lists and written back through the helper's ``__setstate__`` in the fixed binary
  layout (bincode) of river 0.26.1's struct: typed numbers only, no objects. The layout is
  checked on every snapshot and restore (the bytes driftline builds must read back identical), so
  a river release that changes it is a clear error, never a wrong state.
- online models (``labels.learn``): ``LinearRegression`` / ``LogisticRegression`` with an ``SGD``
  optimizer and constant learning rates, alone or after a ``StandardScaler`` in a
  ``compose.Pipeline`` (the builtin models are such pipelines). The snapshot keeps the weights,
  intercept, optimizer step count and scaler statistics (key order kept); the hyperparameters
  come from the configured model, and a snapshot taken under other hyperparameters is reported
  with `ModelMismatch`. Other models are refused by `check_learnable` at start.

Non-finite floats are written as the strings ``"nan"``, ``"inf"`` and ``"-inf"`` (strict JSON).

Examples
--------
>>> from river.drift.binary import DDM
>>> d = DDM()
>>> for x in [0, 1, 0, 0, 1] * 20:
...     d.update(x)
>>> state = river_detector_state(d)
>>> state["type"], state["p"]
('DDM', {'n': 100.0, 'mean': 0.39999999999999997})
>>> again = restore_river_detector(DDM(), state)
>>> river_detector_state(again) == state
True
>>> restore_river_detector(DDM(), {**state, "p": "gASVAAAA"})
Traceback (most recent call last):
...
driftline.errors.DriftlineError: river.p: got 'gASVAAAA'; expected an object
"""

from __future__ import annotations

import collections
import copy
import functools
import math
import struct
from collections.abc import Callable
from typing import Any

import river
from river import compose, linear_model, optim, preprocessing, stats, utils
from river.drift import ADWIN, PageHinkley
from river.drift.binary import DDM, HDDMA, HDDMW
from river.drift.binary.hddm_w import SampleInfo

from driftline.errors import DriftlineError, SpecError

__all__ = [
    "LEARNABLE_MODELS",
    "ModelMismatch",
    "check_learnable",
    "dec_float",
    "enc_float",
    "model_spec",
    "model_state",
    "restore_model",
    "restore_river_detector",
    "river_detector_state",
]

_I32 = (-(2**31), 2**31 - 1)
_MAX_LIST = 10_000_000


# ---------------------------------------------------------------------------- typed reads
def enc_float(x: float) -> float | str:
    """``x`` as JSON: a float, or ``"nan"`` / ``"inf"`` / ``"-inf"``."""
    x = float(x)
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _show(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def dec_float(v: Any, where: str) -> float:
    """The float `enc_float` wrote (an integer is accepted as its float); DriftlineError else."""
    if type(v) is float:
        return v
    if type(v) is int:
        try:
            return float(v)
        except OverflowError:
            pass
    elif type(v) is str and v in ("nan", "inf", "-inf"):
        return float(v)
    raise DriftlineError(f"{where}: got {_show(v)}; expected a number")


def _dec_int(v: Any, where: str, lo: int, hi: int) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise DriftlineError(f"{where}: got {_show(v)}; expected an integer in [{lo}, {hi}]")
    return v


class _Fields:
    """Typed reads from one encoded object whose keys must be exactly ``keys``."""

    def __init__(self, value: Any, where: str, keys: set[str]) -> None:
        if type(value) is not dict:
            raise DriftlineError(f"{where}: got {_show(value)}; expected an object")
        if value.keys() != keys:
            missing, extra = sorted(keys - value.keys()), sorted(map(str, value.keys() - keys))
            raise DriftlineError(
                f"{where}: fields {sorted(map(str, value))} are not the expected {sorted(keys)}"
                + (f" (missing {missing})" if missing else "")
                + (f" (unexpected {extra})" if extra else "")
            )
        self.d = value
        self.where = where

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def flt(self, key: str) -> float:
        return dec_float(self.d[key], self.at(key))

    def opt_flt(self, key: str) -> float | None:
        v = self.d[key]
        return None if v is None else dec_float(v, self.at(key))

    def integer(self, key: str, lo: int, hi: int) -> int:
        return _dec_int(self.d[key], self.at(key), lo, hi)

    def flag(self, key: str) -> bool:
        v = self.d[key]
        if type(v) is not bool:
            raise DriftlineError(f"{self.at(key)}: got {_show(v)}; expected true or false")
        return v

    def seq(self, key: str, max_len: int = _MAX_LIST) -> list[Any]:
        v = self.d[key]
        if type(v) is not list or len(v) > max_len:
            raise DriftlineError(
                f"{self.at(key)}: got {_show(v)}; expected a list of at most {max_len} items"
            )
        return v

    def sub(self, key: str, keys: set[str]) -> _Fields:
        return _Fields(self.d[key], self.at(key), keys)

    def flts(self, key: str, max_len: int = _MAX_LIST) -> list[float]:
        w = self.at(key)
        return [dec_float(x, f"{w}[{i}]") for i, x in enumerate(self.seq(key, max_len))]


def _same(a: float, b: float) -> bool:
    """Bit-for-bit equal floats (NaN equals NaN)."""
    return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))


class _LayoutError(DriftlineError):
    pass


def _layout_error(what: str) -> _LayoutError:
    return _LayoutError(
        f"river {river.__version__} keeps {what} in a form driftline's state encoding does not "
        "know (it knows river 0.26.1's); install the river version this driftline pins"
    )


def _expect_attrs(obj: Any, names: set[str], what: str) -> None:
    if set(vars(obj)) != names:
        raise _layout_error(f"{what} state (attributes {sorted(vars(obj))})")


# ---------------------------------------------------------------------------- stats.Mean
_MEAN_ATTRS = {"n", "_mean"}


def _enc_mean(m: stats.Mean) -> dict[str, Any]:
    if type(m) is not stats.Mean:
        raise _layout_error(f"a detector's running mean ({type(m).__name__})")
    _expect_attrs(m, _MEAN_ATTRS, "stats.Mean")
    return {"n": enc_float(m.n), "mean": enc_float(m._mean)}


def _dec_mean(f: _Fields, key: str) -> stats.Mean:
    g = f.sub(key, {"n", "mean"})
    n = g.flt("n")
    if not (n >= 0.0 and math.isfinite(n)):
        raise DriftlineError(f"{g.at('n')}: got {n}; expected a finite count >= 0")
    m = stats.Mean()
    _expect_attrs(m, _MEAN_ATTRS, "stats.Mean")
    m.n, m._mean = n, g.flt("mean")
    return m


# ---------------------------------------------------------------------------- ADWIN (Rust)
# river 0.26.1's ``RsAdaptiveWindowing`` as bincode 1 writes it (little endian, fixed-width
# integers, usize as u64): ``inner`` = AdaptiveWindowing {delta f64, clock i32, max_buckets u64,
# min_window_length f64, grace_period f64, total f64, variance f64, width f64, total_width f64,
# n_buckets i32, max_n_buckets i32, tick i32, n_detections i32, bucket_list Vec<Bucket {max_size
# u64, current_idx u64, totals Vec<f64>, variances Vec<f64>}>}, then the wrapper's own copy of
# the parameters {delta f64, clock i32, max_buckets u64, min_window_length i32, grace_period i32}.
_AW_HEAD = struct.Struct("<diQdd")
_AW_STATS = struct.Struct("<ddddiiii")
_AW_TAIL = struct.Struct("<diQii")
_U64 = struct.Struct("<Q")
_AW_STAT_NAMES = (
    "total", "variance", "width", "total_width",
    "n_buckets", "max_n_buckets", "tick", "n_detections",
)  # fmt: skip
_ADWIN_ATTRS = {
    "_drift_detected", "delta", "clock", "max_buckets", "min_window_length", "grace_period",
    "_helper",
}  # fmt: skip
_MAX_ADWIN_BUCKETS = 64  # bucket i holds 2**i values each: the width is below 2**53


def _adwin_params(d: ADWIN) -> tuple[float, int, int, int, int]:
    p = (d.delta, d.clock, d.max_buckets, d.min_window_length, d.grace_period)
    if not (type(p[0]) is float and all(type(x) is int for x in p[1:])):
        raise _layout_error(f"ADWIN's parameters ({p!r})")
    return p  # type: ignore[return-value]


def _adwin_frame(params: tuple[float, int, int, int, int]) -> tuple[bytes, bytes]:
    delta, clock, max_buckets, mwl, grace = params
    try:
        head = _AW_HEAD.pack(delta, clock, max_buckets, float(mwl), float(grace))
        tail = _AW_TAIL.pack(delta, clock, max_buckets, mwl, grace)
    except struct.error as e:
        raise _layout_error(f"ADWIN's parameters ({params!r}: {e})") from e
    return head, tail


def _adwin_bytes(
    params: tuple[float, int, int, int, int],
    stat: tuple[Any, ...],
    buckets: list[tuple[list[float], list[float]]],
) -> bytes:
    head, tail = _adwin_frame(params)
    max_buckets = params[2]
    cap = max_buckets + 1
    out = [head, _AW_STATS.pack(*stat), _U64.pack(len(buckets))]
    vec = struct.Struct(f"<Q{cap}d")
    for totals, variances in buckets:
        pad = [0.0] * (cap - len(totals))
        out += [
            _U64.pack(max_buckets),
            _U64.pack(len(totals)),
            vec.pack(cap, *totals, *pad),
            vec.pack(cap, *variances, *pad),
        ]
    out.append(tail)
    return b"".join(out)


@functools.lru_cache(maxsize=256)
def _bucket_list(cap: int, n: int) -> struct.Struct:
    """``n`` buckets: max_size, used, len(totals), totals, len(variances), variances."""
    return struct.Struct("<" + f"QQQ{cap}dQ{cap}d" * n)


def _adwin_parse(
    raw: bytes, params: tuple[float, int, int, int, int]
) -> tuple[tuple[Any, ...], list[tuple[list[float], list[float]]]]:
    """(stats, [(totals, variances) in use per bucket]) of the helper's bytes; layout checked."""
    head, tail = _adwin_frame(params)
    bad = _layout_error("ADWIN's window (AdaptiveWindowing)")
    max_buckets = params[2]
    cap = max_buckets + 1
    if not raw.startswith(head) or not raw.endswith(tail):
        raise bad
    off = len(head)
    try:
        stat = _AW_STATS.unpack_from(raw, off)
        (n,) = _U64.unpack_from(raw, off + _AW_STATS.size)
        off += _AW_STATS.size + 8
        if n > _MAX_ADWIN_BUCKETS:
            raise bad
        layout = _bucket_list(cap, n)
        if off + layout.size + len(tail) != len(raw):
            raise bad
        flat = layout.unpack_from(raw, off)
    except struct.error as e:
        raise bad from e
    buckets = []
    step = 4 + 2 * cap
    for i in range(0, n * step, step):
        max_size, used, t_len = flat[i : i + 3]
        t = flat[i + 3 : i + 3 + cap]
        v_len = flat[i + 3 + cap]
        v = flat[i + 4 + cap : i + step]
        if max_size != max_buckets or t_len != cap or v_len != cap or used >= cap:
            raise bad
        if any(t[used:]) or any(v[used:]):
            raise bad
        buckets.append((list(t[:used]), list(v[:used])))
    return stat, buckets


def _enc_floats(xs: list[float]) -> list[float | str]:
    if all(map(math.isfinite, xs)):
        return xs  # type: ignore[return-value]
    return [enc_float(x) for x in xs]


def _enc_adwin(d: ADWIN) -> dict[str, Any]:
    _expect_attrs(d, _ADWIN_ATTRS, "ADWIN")
    stat, buckets = _adwin_parse(d._helper.__getstate__(), _adwin_params(d))
    out: dict[str, Any] = {"drift_detected": bool(d._drift_detected)}
    for name, v in zip(_AW_STAT_NAMES, stat, strict=True):
        out[name] = enc_float(v) if type(v) is float else v
    out["buckets"] = [{"totals": _enc_floats(t), "variances": _enc_floats(v)} for t, v in buckets]
    return out


def _dec_adwin(d: ADWIN, f: _Fields) -> ADWIN:
    _expect_attrs(d, _ADWIN_ATTRS, "ADWIN")
    params = _adwin_params(d)
    _adwin_parse(d._helper.__getstate__(), params)  # the fresh helper has the known layout
    max_buckets = params[2]
    stat: list[Any] = [f.flt(k) for k in _AW_STAT_NAMES[:4]]
    stat += [f.integer(k, *_I32) for k in _AW_STAT_NAMES[4:]]
    buckets: list[tuple[list[float], list[float]]] = []
    width = 0.0
    for i, b in enumerate(f.seq("buckets", _MAX_ADWIN_BUCKETS)):
        g = _Fields(b, f.at(f"buckets[{i}]"), {"totals", "variances"})
        t, v = g.flts("totals", max_buckets), g.flts("variances", max_buckets)
        if len(t) != len(v):
            raise DriftlineError(f"{g.where}: totals and variances differ in length")
        buckets.append((t, v))
        width += len(t) * 2.0**i
    if not buckets:
        raise DriftlineError(f"{f.at('buckets')}: expected at least one bucket")
    if width != stat[2]:
        raise DriftlineError(
            f"{f.at('width')}: got {stat[2]}, but the buckets hold {width:.0f} values"
        )
    raw = _adwin_bytes(params, tuple(stat), buckets)
    helper = d._helper
    try:
        helper.__setstate__(raw)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # a Rust panic is a BaseException
        raise _layout_error(f"ADWIN's window ({e!r})") from e
    if helper.__getstate__() != raw or helper.get_width() != stat[2]:
        raise _layout_error("ADWIN's window (it did not read back)")
    d._drift_detected = f.flag("drift_detected")
    return d


# ---------------------------------------------------------------------------- sequential
_PH_ATTRS = {
    "_drift_detected", "min_instances", "delta", "threshold", "alpha", "mode", "_x_mean",
    "_sum_increase", "_sum_decrease", "_min_increase", "_max_decrease", "_test_drift",
}  # fmt: skip


def _num(v: Any) -> int | float | str:
    """A float, or an int kept as an int (Page-Hinkley starts ``_max_decrease`` at ``-1``)."""
    return v if type(v) is int else enc_float(v)


def _dec_num(f: _Fields, key: str) -> int | float:
    v = f.d[key]
    if type(v) is int:
        return _dec_int(v, f.at(key), -(2**53), 2**53)
    return f.flt(key)


def _enc_page_hinkley(d: PageHinkley) -> dict[str, Any]:
    _expect_attrs(d, _PH_ATTRS, "PageHinkley")
    return {
        "drift_detected": bool(d._drift_detected),
        "x_mean": _enc_mean(d._x_mean),
        "sum_increase": enc_float(d._sum_increase),
        "sum_decrease": enc_float(d._sum_decrease),
        "min_increase": enc_float(d._min_increase),
        "max_decrease": _num(d._max_decrease),
    }


def _dec_page_hinkley(d: PageHinkley, f: _Fields) -> PageHinkley:
    _expect_attrs(d, _PH_ATTRS, "PageHinkley")
    d._x_mean = _dec_mean(f, "x_mean")
    d._sum_increase = f.flt("sum_increase")
    d._sum_decrease = f.flt("sum_decrease")
    d._min_increase = f.flt("min_increase")
    d._max_decrease = _dec_num(f, "max_decrease")
    d._drift_detected = f.flag("drift_detected")
    return d


_DDM_ATTRS = {
    "_drift_detected", "_warning_detected", "warm_start", "warning_threshold",
    "drift_threshold", "_p", "_p_min", "_s_min", "_ps_min",
}  # fmt: skip


def _enc_ddm(d: DDM) -> dict[str, Any]:
    _expect_attrs(d, _DDM_ATTRS, "DDM")
    return {
        "drift_detected": bool(d._drift_detected),
        "warning_detected": bool(d._warning_detected),
        "p": _enc_mean(d._p),
        "p_min": None if d._p_min is None else enc_float(d._p_min),
        "s_min": None if d._s_min is None else enc_float(d._s_min),
        "ps_min": enc_float(d._ps_min),
    }


def _dec_ddm(d: DDM, f: _Fields) -> DDM:
    _expect_attrs(d, _DDM_ATTRS, "DDM")
    p_min, s_min = f.opt_flt("p_min"), f.opt_flt("s_min")
    if (p_min is None) != (s_min is None):
        raise DriftlineError(f"{f.where}: p_min and s_min are set together")
    d._p = _dec_mean(f, "p")
    d._p_min, d._s_min, d._ps_min = p_min, s_min, f.flt("ps_min")
    d._drift_detected = f.flag("drift_detected")
    d._warning_detected = f.flag("warning_detected")
    return d


_HDDMA_ATTRS = {
    "_drift_detected", "_warning_detected", "drift_confidence", "warning_confidence",
    "two_sided_test", "_x_min", "_x_max", "_z",
}  # fmt: skip


def _enc_hddm_a(d: HDDMA) -> dict[str, Any]:
    _expect_attrs(d, _HDDMA_ATTRS, "HDDMA")
    return {
        "drift_detected": bool(d._drift_detected),
        "warning_detected": bool(d._warning_detected),
        "x_min": _enc_mean(d._x_min),
        "x_max": _enc_mean(d._x_max),
        "z": _enc_mean(d._z),
    }


def _dec_hddm_a(d: HDDMA, f: _Fields) -> HDDMA:
    _expect_attrs(d, _HDDMA_ATTRS, "HDDMA")
    d._x_min, d._x_max, d._z = (_dec_mean(f, k) for k in ("x_min", "x_max", "z"))
    d._drift_detected = f.flag("drift_detected")
    d._warning_detected = f.flag("warning_detected")
    return d


_HDDMW_ATTRS = {
    "_drift_detected", "_warning_detected", "drift_confidence", "warning_confidence",
    "lambda_val", "two_sided_test", "_total", "_s1_decr", "_s1_incr", "_s2_decr", "_s2_incr",
    "_incr_cutpoint", "_decr_cutpoint",
}  # fmt: skip
_SAMPLES = ("total", "s1_decr", "s1_incr", "s2_decr", "s2_incr")
_SAMPLE_ATTRS = {"_ewma", "_is_init", "_ibc", "_lambd_sq", "_c_lambd_sq"}
_EWMEAN_ATTRS = {"fading_factor", "_ewmean"}


def _enc_sample(s: SampleInfo, lambd: float) -> dict[str, Any]:
    if type(s) is not SampleInfo or type(s._ewma) is not stats.EWMean:
        raise _layout_error("HDDM_W's samples")
    _expect_attrs(s, _SAMPLE_ATTRS, "HDDM_W's SampleInfo")
    _expect_attrs(s._ewma, _EWMEAN_ATTRS, "stats.EWMean")
    if s._ewma.fading_factor != lambd:
        raise _layout_error("HDDM_W's samples (fading factor)")
    # river updates a sample's EWMA exactly when it sets _is_init, so the Rust EWMA's own
    # "initialised" flag equals is_init (checked by the round-trip tests)
    return {"ewma": enc_float(s._ewma.get()), "is_init": bool(s._is_init), "ibc": enc_float(s._ibc)}


def _dec_sample(f: _Fields, key: str, lambd: float) -> SampleInfo:
    g = f.sub(key, {"ewma", "is_init", "ibc"})
    mean, is_init, ibc = g.flt("ewma"), g.flag("is_init"), g.flt("ibc")
    s = SampleInfo(lambd)
    _expect_attrs(s, _SAMPLE_ATTRS, "HDDM_W's SampleInfo")
    if is_init:
        s._ewma.update(mean)  # the first update stores the value as is
    elif mean != 0.0:
        raise DriftlineError(f"{g.at('ewma')}: got {mean} for a sample that saw no value")
    if not _same(s._ewma.get(), mean):
        raise _layout_error("stats.EWMean (it did not read back)")
    s._is_init, s._ibc = is_init, ibc
    return s


def _enc_hddm_w(d: HDDMW) -> dict[str, Any]:
    _expect_attrs(d, _HDDMW_ATTRS, "HDDMW")
    out: dict[str, Any] = {
        "drift_detected": bool(d._drift_detected),
        "warning_detected": bool(d._warning_detected),
    }
    for k in _SAMPLES:
        out[k] = _enc_sample(getattr(d, f"_{k}"), d.lambda_val)
    out["incr_cutpoint"] = enc_float(d._incr_cutpoint)
    out["decr_cutpoint"] = enc_float(d._decr_cutpoint)
    return out


def _dec_hddm_w(d: HDDMW, f: _Fields) -> HDDMW:
    _expect_attrs(d, _HDDMW_ATTRS, "HDDMW")
    for k in _SAMPLES:
        setattr(d, f"_{k}", _dec_sample(f, k, d.lambda_val))
    d._incr_cutpoint = f.flt("incr_cutpoint")
    d._decr_cutpoint = f.flt("decr_cutpoint")
    d._drift_detected = f.flag("drift_detected")
    d._warning_detected = f.flag("warning_detected")
    return d


# ---------------------------------------------------------------------------- detector registry
_Enc = Callable[[Any], dict[str, Any]]
_Dec = Callable[[Any, _Fields], Any]
#: river class -> (name in the snapshot, encode, decode); the only classes a snapshot can hold
_DETECTORS: dict[type, tuple[str, _Enc, _Dec]] = {
    ADWIN: ("ADWIN", _enc_adwin, _dec_adwin),
    PageHinkley: ("PageHinkley", _enc_page_hinkley, _dec_page_hinkley),
    DDM: ("DDM", _enc_ddm, _dec_ddm),
    HDDMA: ("HDDMA", _enc_hddm_a, _dec_hddm_a),
    HDDMW: ("HDDMW", _enc_hddm_w, _dec_hddm_w),
}


def _registered(det: Any) -> tuple[str, _Enc, _Dec]:
    entry = _DETECTORS.get(type(det))
    if entry is None:
        raise DriftlineError(
            f"no plain-data state encoding for river {type(det).__name__}; driftline encodes "
            f"{sorted(name for name, _, _ in _DETECTORS.values())}"
        )
    return entry


def river_detector_state(det: Any) -> dict[str, Any]:
    """Plain data (JSON-able) holding the whole state of a river drift detector.

    The hyperparameters are not included: `restore_river_detector` takes them from a detector
    built by the caller.
    """
    name, enc, _ = _registered(det)
    return {"type": name, **enc(det)}


def restore_river_detector(template: Any, state: Any) -> Any:
    """A new detector of ``template``'s class and hyperparameters, in the state `state` holds.

    ``template`` is not modified. Raises `DriftlineError` if ``state`` is not a
    `river_detector_state` of that class (every field is checked).
    """
    name, enc, dec = _registered(template)
    if type(state) is dict and state.get("type") != name:
        raise DriftlineError(f"type: got {_show(state.get('type'))}; expected {name!r}")
    keys = set(enc(template.clone())) | {"type"}
    return dec(template.clone(), _Fields(state, "river", keys))


# ---------------------------------------------------------------------------- online models
LEARNABLE_MODELS = (
    "river linear_model.LinearRegression (loss Squared, Absolute, Huber or Quantile) or "
    "linear_model.LogisticRegression (loss Log or Hinge), with an optim.SGD optimizer, constant "
    "learning rates, l1 = 0 and a Zeros or Constant initializer, alone or after a "
    "preprocessing.StandardScaler (without window_size) in a compose.Pipeline: e.g. the builtin "
    "models logistic_regression and linear_regression"
)
_REGRESSION_LOSSES: dict[type, str] = {
    optim.losses.Squared: "Squared",
    optim.losses.Absolute: "Absolute",
    optim.losses.Huber: "Huber",
    optim.losses.Quantile: "Quantile",
}
_CLASSIFICATION_LOSSES: dict[type, str] = {optim.losses.Log: "Log", optim.losses.Hinge: "Hinge"}
_LINEAR: dict[type, tuple[str, dict[type, str]]] = {
    linear_model.LinearRegression: ("LinearRegression", _REGRESSION_LOSSES),
    linear_model.LogisticRegression: ("LogisticRegression", _CLASSIFICATION_LOSSES),
}
_INITIALIZERS: dict[type, str] = {
    optim.initializers.Zeros: "Zeros",
    optim.initializers.Constant: "Constant",
}
_GLM_ATTRS = {
    "optimizer", "loss", "l2", "l1", "intercept_init", "intercept", "intercept_lr",
    "clip_gradient", "initializer", "_weights", "_y_name",
}  # fmt: skip
_SCALER_ATTRS = {"with_std", "window_size", "counts", "means", "vars"}
_MODEL_KIND = "river_linear/1"
_MAX_FEATURES = 100_000


class ModelMismatch(DriftlineError):
    """The saved online model was learnt under other hyperparameters than the configured one."""


def _refuse(model: Any, why: str) -> SpecError:
    return SpecError(
        f"labels.learn = true: the model ({type(model).__name__}) cannot be saved in the state "
        f"changelog without pickle ({why}); online learning supports {LEARNABLE_MODELS}"
    )


def _numbers(obj: Any, model: Any, what: str) -> dict[str, float | str]:
    out: dict[str, float | str] = {}
    for k, v in vars(obj).items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise _refuse(model, f"{what} has a non-numeric setting {k}={_show(v)}")
        out[k] = enc_float(v)
    return out


def _constant_rate(sched: Any, model: Any, what: str) -> float | str:
    if type(sched) is not optim.schedulers.Constant:
        raise _refuse(model, f"{what} is a {type(sched).__name__}, not a constant rate")
    return _numbers(sched, model, what)["learning_rate"]


def _parts(model: Any) -> tuple[Any | None, Any]:
    """(scaler or None, linear model) of a supported model; SpecError otherwise."""
    steps = list(model.steps.values()) if type(model) is compose.Pipeline else [model]
    scaler = None
    if len(steps) == 2 and type(steps[0]) is preprocessing.StandardScaler:
        scaler = steps.pop(0)
        _expect_attrs(scaler, _SCALER_ATTRS, "StandardScaler")
        if scaler.window_size is not None:
            raise _refuse(model, "its StandardScaler has a window_size")
        if type(scaler.with_std) is not bool:
            raise _refuse(model, "its StandardScaler's with_std is not a boolean")
    if len(steps) != 1 or type(steps[0]) not in _LINEAR:
        names = [type(s).__name__ for s in steps]
        raise _refuse(model, f"it is made of {names}")
    lin = steps[0]
    if getattr(lin, "l1", 0) != 0:
        raise _refuse(model, f"l1={lin.l1} (its cumulative penalty is not encoded)")
    if set(vars(lin)) != _GLM_ATTRS:
        raise _refuse(model, f"its {type(lin).__name__} has attributes {sorted(vars(lin))}")
    if lin._y_name is not None and type(lin._y_name) is not str:
        raise _refuse(model, f"it was trained on a series named {_show(lin._y_name)}")
    return scaler, lin


def model_spec(model: Any) -> dict[str, Any]:
    """The hyperparameters of a learnable model, as plain data (SpecError if not learnable)."""
    scaler, lin = _parts(model)
    name, losses = _LINEAR[type(lin)]
    opt = lin.optimizer
    if type(opt) is not optim.SGD or set(vars(opt)) != {"lr", "n_iterations"}:
        raise _refuse(model, f"its optimizer is {type(opt).__name__}, not SGD")
    loss = losses.get(type(lin.loss))
    if loss is None:
        raise _refuse(model, f"its loss is {type(lin.loss).__name__}")
    init = _INITIALIZERS.get(type(lin.initializer))
    if init is None:
        raise _refuse(model, f"its initializer is {type(lin.initializer).__name__}")
    settings = {k: getattr(lin, k) for k in ("l2", "l1", "intercept_init", "clip_gradient")}
    for k, v in settings.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise _refuse(model, f"{k}={_show(v)} is not a number")
    return {
        "pipeline": type(model) is compose.Pipeline,
        "scaler": None if scaler is None else {"with_std": scaler.with_std},
        "model": name,
        "optimizer": {"SGD": {"lr": _constant_rate(opt.lr, model, "the optimizer's lr")}},
        "loss": {loss: _numbers(lin.loss, model, "the loss")},
        "initializer": {init: _numbers(lin.initializer, model, "the initializer")},
        "intercept_lr": _constant_rate(lin.intercept_lr, model, "intercept_lr"),
        **{k: enc_float(v) for k, v in settings.items()},
    }


def check_learnable(model: Any) -> None:
    """SpecError, naming the supported models, unless `model_state` can encode ``model``."""
    model_spec(model)


def _pairs(d: Any, value: Callable[[Any], Any]) -> list[list[Any]]:
    out = []
    for k, v in d.items():
        if type(k) is not str:
            raise _layout_error(f"a model's feature name {_show(k)} (not a string)")
        out.append([k, value(v)])
    return out


def _count(v: Any) -> int:
    if type(v) is not int:
        raise _layout_error(f"a StandardScaler count {_show(v)}")
    return v


def model_state(model: Any) -> dict[str, Any]:
    """Plain data holding what ``model`` learnt (and its hyperparameters, to check a restore).

    Feature order is kept (river sums weights in their insertion order).
    """
    spec = model_spec(model)
    scaler, lin = _parts(model)
    return {
        "kind": _MODEL_KIND,
        "spec": spec,
        "scaler": None
        if scaler is None
        else {
            "counts": _pairs(scaler.counts, _count),
            "means": _pairs(scaler.means, enc_float),
            "vars": _pairs(scaler.vars, enc_float),
        },
        "weights": _pairs(lin._weights.to_dict(), enc_float),
        "intercept": enc_float(lin.intercept),
        "n_iterations": _count(lin.optimizer.n_iterations),
        "y_name": lin._y_name,
    }


def _dec_pairs(f: _Fields, key: str, value: Callable[[Any, str], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, p in enumerate(f.seq(key, _MAX_FEATURES)):
        w = f.at(f"{key}[{i}]")
        if type(p) is not list or len(p) != 2 or type(p[0]) is not str or p[0] in out:
            raise DriftlineError(f"{w}: got {_show(p)}; expected a [name, value] pair")
        out[p[0]] = value(p[1], w)
    return out


def _dec_count(v: Any, where: str) -> int:
    return _dec_int(v, where, 0, 2**62)


def restore_model(template: Any, state: Any) -> Any:
    """A copy of ``template`` (the configured model) holding what `model_state` saved.

    Raises
    ------
    ModelMismatch
        If the state was saved under other hyperparameters (or another model kind).
    DriftlineError
        If ``state`` is not a `model_state` (every field is checked).
    """
    f = _Fields(
        state, "model", {"kind", "spec", "scaler", "weights", "intercept", "n_iterations", "y_name"}
    )
    if f.d["kind"] != _MODEL_KIND:
        raise DriftlineError(f"model.kind: got {_show(f.d['kind'])}; expected {_MODEL_KIND!r}")
    spec = model_spec(template)
    if f.d["spec"] != spec:
        saved = f.d["spec"]
        raise ModelMismatch(f"the saved online model has hyperparameters {saved}, not {spec}")
    weights = _dec_pairs(f, "weights", dec_float)
    intercept = f.flt("intercept")
    n_iterations = f.integer("n_iterations", 0, 2**62)
    y_name = f.d["y_name"]
    if y_name is not None and type(y_name) is not str:
        raise DriftlineError(f"model.y_name: got {_show(y_name)}; expected a string or null")
    sc = None
    if spec["scaler"] is not None:
        g = f.sub("scaler", {"counts", "means", "vars"})
        sc = (_dec_pairs(g, "counts", _dec_count), _dec_pairs(g, "means", dec_float),
              _dec_pairs(g, "vars", dec_float))  # fmt: skip
    elif f.d["scaler"] is not None:
        raise DriftlineError("model.scaler: got a scaler for a model without one")
    model = copy.deepcopy(template)
    scaler, lin = _parts(model)
    if scaler is not None and sc is not None:
        scaler.counts = collections.Counter(sc[0])
        scaler.means = collections.defaultdict(float, sc[1])
        scaler.vars = collections.defaultdict(float, sc[2])
    lin._weights = utils.VectorDict(weights)
    lin.intercept = intercept
    lin.optimizer.n_iterations = n_iterations
    lin._y_name = y_name
    return model
