"""The ``driftline report`` page in headless Chromium: what it shows, that nothing in it runs or
is fetched (a recording proxy sees no request), and that hostile names stay text."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from driftline.agents.demo import _to_toml
from driftline.agents.svg import fmt_num
from driftline.cli import main as cli_main
from driftline.schemas import validate
from tests.agents.test_replay_business import _spec_data as _business_spec_data
from tests.agents.test_replay_business import files as files
from tests.agents.test_report import HOSTILE, _hostile_spec, _spec_data
from tests.chromium import page_requests, recording_proxy, run_chromium

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], Path]:
    """A report of 2 partitions, a model, and a hostile field with a chi-square detector."""
    tmp = tmp_path_factory.mktemp("report")
    _spec, src = _hostile_spec(tmp)
    data = _spec_data(model=True)
    data["input"]["fields"]["HOSTILE_FIELD"] = "string"
    data["detectors"].append(
        {"name": "score_ks", "type": "ks", "target": "prediction", "reference_size": 300,
         "window_size": 300, "stride": 100}
    )  # fmt: skip
    data["detectors"].append(
        {"name": "hostile_chi2", "type": "chi2", "target": "HOSTILE_FIELD",
         "reference_size": 300, "window_size": 300}
    )  # fmt: skip
    quoted = '"' + HOSTILE.replace('"', '\\"') + '"'  # a TOML string: the key needs quotes
    text = _to_toml(data).replace('"HOSTILE_FIELD"', quoted).replace("HOSTILE_FIELD", quoted)
    spec_path = tmp / "spec.toml"
    spec_path.write_text(text)
    html, js = tmp / "report.html", tmp / "report.json"
    code = cli_main(
        ["report", "-c", str(spec_path), "--input", str(src), "--output", str(html), "--json",
         str(js), "--partitions", "2", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    r = orjson.loads(js.read_bytes())
    validate("report", r)
    return html, r, tmp


def _dump_dom(tmp: Path, page: Path) -> tuple[str, list[str]]:
    """Chromium's DOM of ``page`` after 3 s of (virtual) time, and the requests the page made
    (through a recording proxy)."""
    with recording_proxy() as (proxy, requests):
        dom = run_chromium(
            tmp, f"--proxy-server=http://{proxy}", "--proxy-bypass-list=<-loopback>",
            "--virtual-time-budget=3000", "--dump-dom", page.as_uri(),
        )  # fmt: skip
    assert dom.returncode == 0, dom.stderr[-3000:]
    return dom.stdout, page_requests(requests)


def test_the_file_is_self_contained(report: tuple[Path, dict[str, Any], Path]) -> None:
    html = report[0].read_text()
    without_ns = html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http://" not in without_ns and "https://" not in without_ns
    tags = re.findall(r"<[^>]*>", html)  # escaped text holds no "<": these are the elements
    names = {re.match(r"</?([a-zA-Z0-9]+)", t).group(1).lower() for t in tags if t[1] != "!"}
    assert not names & {"script", "link", "img", "iframe", "object", "embed", "image", "use"}
    assert not [t for t in tags if re.search(r"\s(src|href)=[\"'](?!#)", t)]
    (style,) = re.findall(r"<style>(.*?)</style>", html, re.S)
    assert "url(" not in style and "@import" not in style and "@font-face" not in style


def test_chromium_renders_the_report_offline(report: tuple[Path, dict[str, Any], Path]) -> None:
    path, r, tmp = report
    page, requests = _dump_dom(tmp, path)
    assert requests == [], "the page must fetch nothing"
    # no element came from the data: the hostile names are text
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(\"x\")&lt;/script&gt;" in page  # text nodes keep quotes
    for title in ("Summary", "Where the detectors would have fired", "Detectors",
                  "Input drift (fields and features)", "Prediction drift",
                  "Model metrics and estimated performance"):  # fmt: skip
        assert f">{title}</h" in page, title
    names = [d["name"] for d in r["detectors"]]
    assert names == ["amount_ks", "latency_adwin", "score_ks", "hostile_chi2"]
    sections = re.findall(r'<section class="detector" id="det-\d+" data-detector="([^"]+)"', page)
    assert sections == ["amount_ks", "latency_adwin", "hostile_chi2", "score_ks"]  # by kind
    counts = dict(
        re.findall(r'data-detector="([^"]+)">.*?<b class="n-episodes">(\d+)</b>', page, re.S)
    )
    assert counts == {d["name"]: str(len(d["episodes"])) for d in r["detectors"]}
    fired = {d["name"] for d in r["detectors"] if d["episodes"]}
    assert fired == {"amount_ks", "latency_adwin", "hostile_chi2"}  # the untrained model: 0.5
    assert re.search(r"score_ks</a></td>.*?<span class=\"badge quiet\">quiet</span>", page)
    assert page.count('<span class="badge fired">') == 3
    s = r["summary"]
    assert f"<td>events replayed</td><td>{s['events']}</td>" in page
    assert f"<td>drift episodes</td><td>{s['episodes']}</td>" in page
    assert "<td>partitions</td><td>0, 1</td>" in page
    # every episode has its row, with its partition and firing offset
    table = page.split("Where the detectors would have fired")[1].split("<h2")[0]
    rows = re.findall(r"<tr><td>([^<]*)</td><td>[^<]*</td><td class=\"num\">(\d+)</td>"
                      r"<td class=\"num\">(\d+)</td>", table)  # fmt: skip
    want = [
        (d["name"].replace('"', "&quot;"), str(e["partition"]), str(e["fired"]["offset"]))
        for d in r["detectors"]
        for e in d["episodes"]
    ]
    assert rows == want and len(rows) == s["episodes"]
    # charts: statistic per detector, p-values where the detector has them, a histogram per
    # numeric target, category bars for the categorical one
    assert page.count('<svg class="plot series" data-detector="amount_ks"') == 2
    assert page.count('<svg class="plot series" data-detector="latency_adwin"') == 1
    assert page.count('<svg class="plot series" data-detector="hostile_chi2"') == 2
    assert page.count('<svg class="plot series" data-detector="score_ks"') == 2
    assert page.count('<svg class="plot dist"') == 3 and page.count('<svg class="plot cats"') == 1
    assert page.count('class="band"') >= s["episodes"]
    ks = r["detectors"][0]["distribution"]
    assert f"<td class=\"num\">{ks['current']['n']}</td>" in page


def test_chromium_renders_the_business_metric(
    files: tuple[Path, Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """``--business``: the metric's chart and table, and each episode's before → during."""
    src, biz, _events = files
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(_to_toml(_business_spec_data()))
    html, js = tmp_path / "r.html", tmp_path / "r.json"
    code = cli_main(["report", "-c", str(spec_path), "--input", str(src), "--business", str(biz),
                     "--output", str(html), "--json", str(js), "--no-progress"])  # fmt: skip
    assert code == 0
    r = orjson.loads(js.read_bytes())
    page, requests = _dump_dom(tmp_path, html)
    assert requests == []
    assert ">Business metric: revenue (mean of order.total over 60 s)</h2>" in page
    assert page.count('<svg class="plot series" data-business="revenue"') == 1
    chart = page.split('data-business="revenue"')[1].split("</svg>")[0]
    assert chart.count('class="band"') == sum(len(d["episodes"]) for d in r["detectors"])
    (series,) = r["business"]["series"]
    _t, value, n = series["points"][-1]
    assert f"<td>{fmt_num(value)}</td><td>{n}</td></tr>" in page
    table = page.split("Where the detectors would have fired")[1].split("<h2")[0]
    cells = re.findall(r'<span class="business">([^<]*) <b>\(([^)]*)\)</b></span>', table)
    eps = [e for d in r["detectors"] for e in d["episodes"]]
    want = []
    for e in eps:
        b = (e["resolved"] or e["fired"])["business"]
        want.append((f"{fmt_num(b['before']['value'])} (n={b['before']['n']}) → "
                     f"{fmt_num(b['during']['value'])} (n={b['during']['n']})",
                     f"{b['change']:+.4g}"))  # fmt: skip
    assert cells == want and len(cells) >= 2


def test_the_proxy_sees_what_a_page_fetches(tmp_path: Path) -> None:
    """The control: a page that does fetch (an image, a style sheet) is seen doing it."""
    page = tmp_path / "fetching.html"
    page.write_text(
        "<!doctype html><html><head><link rel='stylesheet' href='http://cdn.example.test/a.css'>"
        "</head><body><img src='https://img.example.test/b.png'></body></html>"
    )
    _dom, requests = _dump_dom(tmp_path, page)
    assert sorted(requests) == [
        "CONNECT img.example.test:443",
        "GET http://cdn.example.test/a.css",
    ]


def test_a_screenshot_of_the_report(report: tuple[Path, dict[str, Any], Path]) -> None:
    path, _r, tmp = report
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    r = run_chromium(
        tmp, f"--screenshot={shot}", "--window-size=1280,2400", "--hide-scrollbars",
        path.as_uri(),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 40_000
