"""Observability end to end: GET /metrics (Prometheus text), the dashboard page at GET /, the access log.

A real `sluice serve` (tiny model) is scraped before and after a few requests whose usage we know; the counters
and histogram counts must move by exactly what those requests imply. The text is read with a strict parser
written here (the exposition format 0.0.4: HELP/TYPE before samples, label escaping, cumulative buckets ending
in +Inf == _count), so a malformed line fails the test rather than being skipped.
"""
import json
import math
import os
import re
import subprocess
import tempfile

import pytest
import requests

from sluice_server import MODEL, Server

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


def parse_value(s):
    if s in ("+Inf", "-Inf", "NaN"):
        return float(s.replace("Inf", "inf"))
    assert re.fullmatch(r"-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?", s), f"bad value {s!r}"
    return float(s)


def parse_labels(s, i):
    """s[i] is just past '{'; returns (labels, index past '}'). Only \\\\, \\" and \\n escapes exist."""
    labels = {}
    while True:
        if s[i] == "}":
            return labels, i + 1
        j = s.index("=", i)
        name = s[i:j]
        assert LABEL.match(name), f"bad label name {name!r} in {s!r}"
        assert s[j + 1] == '"', s
        k, val = j + 2, []
        while s[k] != '"':
            if s[k] == "\\":
                esc = s[k + 1]
                assert esc in '\\"n', f"bad escape \\{esc} in {s!r}"
                val.append("\n" if esc == "n" else esc)
                k += 2
            else:
                assert s[k] != "\n"
                val.append(s[k])
                k += 1
        assert name not in labels, f"label {name} twice in {s!r}"
        labels[name] = "".join(val)
        i = k + 1
        if s[i] == ",":
            i += 1
        else:
            assert s[i] == "}", s


def parse_metrics(text):
    """Strict reader: returns {family: {"type", "help", "samples": [(name, labels, value)]}}."""
    assert text.endswith("\n"), "the exposition ends with a newline"
    fams, seen = {}, set()
    for line in text[:-1].split("\n"):
        assert line, "no blank lines"
        if line.startswith("#"):
            m = re.fullmatch(r"# (HELP|TYPE) (\S+) (.*)", line)
            assert m, f"bad comment line {line!r}"
            kind, name, rest = m.groups()
            assert NAME.match(name), line
            f = fams.setdefault(name, {"type": None, "help": None, "samples": []})
            if kind == "TYPE":
                assert f["type"] is None and not f["samples"], f"TYPE of {name} twice or after its samples"
                assert rest in ("counter", "gauge", "histogram", "summary", "untyped"), line
                f["type"] = rest
            else:
                assert f["help"] is None, f"HELP of {name} twice"
                f["help"] = rest
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)", line)
        assert m, f"bad sample line {line!r}"
        name, i = m.group(1), m.end()
        labels = {}
        if line[i] == "{":
            labels, i = parse_labels(line, i + 1)
        assert line[i] == " ", line
        value = parse_value(line[i + 1:])
        fam = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[: -len(suffix)] in fams and fams[name[: -len(suffix)]]["type"] == "histogram":
                fam = name[: -len(suffix)]
        assert fam in fams and fams[fam]["type"], f"{name}: sample before its TYPE"
        key = (name, tuple(sorted(labels.items())))
        assert key not in seen, f"series twice: {line}"
        seen.add(key)
        fams[fam]["samples"].append((name, labels, value))
    for name, f in fams.items():
        assert f["type"] and f["help"], f"{name} lacks TYPE or HELP"
        assert f["samples"], f"{name} has no samples"
        if f["type"] == "histogram":
            check_histogram(name, f["samples"])
    return fams


def check_histogram(name, samples):
    buckets = [(s[1]["le"], s[2]) for s in samples if s[0] == name + "_bucket"]
    count = [s[2] for s in samples if s[0] == name + "_count"]
    total = [s[2] for s in samples if s[0] == name + "_sum"]
    assert buckets and len(count) == 1 and len(total) == 1, name
    les = [parse_value(le) for le, _ in buckets]
    assert les == sorted(les) and len(set(les)) == len(les), f"{name}: le not increasing"
    assert math.isinf(les[-1]), f"{name}: no +Inf bucket"
    counts = [c for _, c in buckets]
    assert all(a <= b for a, b in zip(counts, counts[1:])), f"{name}: buckets not cumulative: {counts}"
    assert counts[-1] == count[0], f"{name}: +Inf {counts[-1]} != _count {count[0]}"
    assert total[0] >= 0


def value(fams, name, **labels):
    """The one sample of name whose labels include labels; 0 when the series does not exist (yet)."""
    fam = name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in fams:
            fam = name[: -len(suffix)]
    hits = [v for n, l, v in fams.get(fam, {"samples": []})["samples"]
            if n == name and all(l.get(k) == str(x) for k, x in labels.items())]
    assert len(hits) <= 1, (name, labels, hits)
    return hits[0] if hits else 0.0


def scrape(srv, key=None):
    h = {"Authorization": f"Bearer {key}"} if key else {}
    r = requests.get(srv.base + "/metrics", headers=h, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse_metrics(r.text)


@pytest.fixture(scope="module")
def logged():
    fd, path = tempfile.mkstemp(suffix=".jsonl")
    os.close(fd)
    s = Server("--access-log", path)
    yield s, path
    assert s.stop() == 0, s.stderr()
    os.unlink(path)


def test_counters_and_histograms_move_by_what_the_requests_did(logged):
    srv, _ = logged
    client = srv.client()
    before = scrape(srv)
    # known shapes: ignore_eos makes every choice run to max_tokens, so tokens and events are exact
    a = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0,
                                  extra_body={"ignore_eos": True})
    b = client.completions.create(model=MODEL, prompt="The cat", max_tokens=4, n=2, extra_body={"ignore_eos": True})
    chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                 max_tokens=5, stream=True, stream_options={"include_usage": True},
                                                 extra_body={"ignore_eos": True}))
    c_usage = chunks[-1].usage
    assert requests.get(srv.base + "/v1/nothing", timeout=10).status_code == 404
    after = scrape(srv)

    def d(name, **labels):
        return value(after, name, model_name=MODEL, **labels) - value(before, name, model_name=MODEL, **labels)

    prompt = a.usage.prompt_tokens + b.usage.prompt_tokens + c_usage.prompt_tokens
    gen = a.usage.completion_tokens + b.usage.completion_tokens + c_usage.completion_tokens
    assert (a.usage.completion_tokens, b.usage.completion_tokens, c_usage.completion_tokens) == (8, 8, 5)
    assert d("sluice_prompt_tokens_total") == prompt
    assert d("sluice_generation_tokens_total") == gen
    assert d("sluice_request_success_total", finished_reason="length") == 4  # one per choice: 1 + 2 + 1
    assert d("sluice_request_success_total", finished_reason="stop") == 0
    # one engine request per prompt: three of them, each with a first token, a queue time, an end
    for h in ("time_to_first_token_seconds", "e2e_request_latency_seconds", "request_queue_time_seconds",
              "request_prefill_time_seconds", "request_decode_time_seconds", "request_time_per_output_token_seconds"):
        assert d(f"sluice_{h}_count") == 3, h
        assert d(f"sluice_{h}_sum") >= 0, h
    assert d("sluice_e2e_request_latency_seconds_sum") >= d("sluice_time_to_first_token_seconds_sum") > 0
    # every token event after a choice's first is one inter-token gap: 7 + 2 x 3 + 4
    assert d("sluice_inter_token_latency_seconds_count") == 17
    assert d("sluice_http_requests_total", route="/v1/completions", status=200) == 2
    assert d("sluice_http_requests_total", route="/v1/chat/completions", status=200) == 1
    assert d("sluice_http_requests_total", route="other", status=404) == 1
    assert d("sluice_http_requests_total", route="/metrics", status=200) == 1  # the scrape before
    assert d("sluice_engine_steps_total") >= 8
    busy = d("sluice_device_busy_seconds_total", device="cpu")
    assert busy > 0
    # each step's time is split over its requests: the per-request device time adds up to the busy time
    dev = d("sluice_request_device_time_seconds_sum")
    assert abs(dev - busy) <= max(0.01 * busy, 1e-4), (dev, busy)
    assert value(after, "sluice_num_requests_running", model_name=MODEL) == 0
    assert value(after, "sluice_num_requests_waiting", model_name=MODEL) == 0
    assert 0 <= value(after, "sluice_kv_cache_usage_perc", model_name=MODEL) <= 1
    assert value(after, "sluice_http_open_connections", model_name=MODEL) >= 1  # this scrape's own
    assert value(after, "sluice_process_resident_memory_bytes", model_name=MODEL) > 1 << 20
    assert value(after, "sluice_process_cpu_seconds_total", model_name=MODEL) > 0


def test_every_series_is_labelled_and_the_families_are_there(logged):
    srv, _ = logged
    fams = scrape(srv)
    for name, f in fams.items():
        assert name.startswith("sluice_"), name
        for n, labels, _ in f["samples"]:
            assert labels.get("model_name") == MODEL, (n, labels)
        if f["type"] == "counter":
            assert name.endswith("_total"), name
    for name in ("time_to_first_token_seconds", "inter_token_latency_seconds", "request_time_per_output_token_seconds",
                 "e2e_request_latency_seconds", "request_queue_time_seconds", "request_prefill_time_seconds",
                 "request_decode_time_seconds", "engine_step_tokens"):
        assert fams["sluice_" + name]["type"] == "histogram", name
    # every engine step lands in exactly one tokens-per-step bucket
    assert value(fams, "sluice_engine_step_tokens_count") == value(fams, "sluice_engine_steps_total") > 0
    assert value(fams, "sluice_engine_step_tokens_sum") >= value(fams, "sluice_engine_step_tokens_count")
    for name in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc"):
        assert fams["sluice_" + name]["type"] == "gauge", name
    for name in ("prompt_tokens_total", "generation_tokens_total", "request_success_total", "num_preemptions_total",
                 "prefix_cache_queries_total", "prefix_cache_hits_total", "device_busy_seconds_total",
                 "http_requests_total", "process_cpu_seconds_total"):
        assert fams["sluice_" + name]["type"] == "counter", name


def test_access_log_has_one_json_line_per_request(logged):
    srv, path = logged
    client = srv.client()
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=3,
                                       extra_body={"ignore_eos": True})
    e = client.embeddings.create(model=MODEL, input="a cat")
    with open(path) as f:
        lines = [json.loads(line) for line in f.read().splitlines()]  # every line is one JSON object
    for rec in lines:
        for k in ("time", "id", "endpoint", "model", "tenant", "status", "prompt_tokens", "completion_tokens",
                  "cached_tokens", "finish_reason", "timings"):
            assert k in rec, (k, rec)
        assert rec["model"] == MODEL
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rec["time"]), rec["time"]
    mine = [x for x in lines if x["id"] == r.id]
    assert len(mine) == 1, lines
    rec = mine[0]
    assert rec["status"] == 200 and rec["endpoint"] == "/v1/chat/completions" and rec["stream"] is False
    assert rec["prompt_tokens"] == r.usage.prompt_tokens and rec["completion_tokens"] == 3
    assert rec["finish_reason"] == "length"
    t = rec["timings"]
    assert t["e2e_ms"] >= t["ttft_ms"] > 0 and t["device_ms"] > 0 and t["queue_ms"] >= 0
    emb = [x for x in lines if x["endpoint"] == "/v1/embeddings"]
    assert emb and emb[-1]["prompt_tokens"] == e.usage.prompt_tokens and emb[-1]["finish_reason"] is None
    assert len({x["id"] for x in lines}) == len(lines)


def test_dashboard_page(logged):
    srv, _ = logged
    r = requests.get(srv.base + "/", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    page = r.text
    assert "/metrics" in page and "sluiceDashboard" in page and "<canvas" in page
    # self-contained: nothing fetched from elsewhere
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page), "external asset"
    assert "http://" not in page and "https://" not in page
    assert requests.post(srv.base + "/metrics", timeout=10).status_code == 405


def test_metrics_key_and_label_escaping():
    odd = 'we"ird\\name'
    srv = Server("--api-key", "sekret", "--served-model-name", odd)
    try:
        assert requests.get(srv.base + "/metrics", timeout=10).status_code == 401
        assert requests.get(srv.base + "/metrics", headers={"Authorization": "Bearer wrong"},
                            timeout=10).status_code == 401
        fams = scrape(srv, key="sekret")
        # the label value round-trips through the format's escaping
        assert {l["model_name"] for f in fams.values() for _, l, _ in f["samples"]} == {odd}
        page = requests.get(srv.base + "/", timeout=10)  # the page holds no data: no key asked
        assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    finally:
        assert srv.stop() == 0, srv.stderr()
    srv = Server("--api-key", "sekret", "--no-metrics-require-key")
    try:
        scrape(srv)  # Prometheus scrapes without the key
        assert requests.get(srv.base + "/v1/models", timeout=10).status_code == 401  # the API still needs it
    finally:
        assert srv.stop() == 0, srv.stderr()


FAKE_NVML = r"""
/* A fake NVML: two devices; the second has no power reading (NVML_ERROR_NOT_SUPPORTED = 3). */
typedef struct { unsigned gpu, memory; } util_t;
typedef struct { unsigned long long total, free, used; } mem_t;
static int devs[2];
int nvmlInit_v2(void) { return 0; }
int nvmlShutdown(void) { return 0; }
int nvmlDeviceGetCount_v2(unsigned *n) { *n = 2; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned i, void **d) { if (i > 1) return 2; *d = &devs[i]; return 0; }
int nvmlDeviceGetUtilizationRates(void *d, util_t *u) { u->gpu = d == &devs[0] ? 37 : 0; u->memory = 5; return 0; }
int nvmlDeviceGetMemoryInfo(void *d, mem_t *m) {
    m->total = 80ull << 30; m->used = d == &devs[0] ? 3ull << 30 : 0; m->free = m->total - m->used; return 0; }
int nvmlDeviceGetPowerUsage(void *d, unsigned *mw) { if (d != &devs[0]) return 3; *mw = 123456; return 0; }
"""


def test_gpu_series_from_nvml_loaded_at_run_time(tmp_path):
    src, lib = tmp_path / "fake_nvml.c", tmp_path / "libfake_nvml.so"
    src.write_text(FAKE_NVML)
    subprocess.run([os.environ.get("CC", "cc"), "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    srv = Server(env={"SLUICE_NVML_LIB": str(lib)})
    try:
        fams = scrape(srv)
        assert value(fams, "sluice_gpu_utilization_perc", device="cuda:0") == pytest.approx(0.37)
        assert value(fams, "sluice_gpu_utilization_perc", device="cuda:1") == 0
        assert value(fams, "sluice_gpu_memory_used_bytes", device="cuda:0") == 3 << 30
        assert value(fams, "sluice_gpu_memory_total_bytes", device="cuda:1") == 80 << 30
        assert value(fams, "sluice_gpu_power_watts", device="cuda:0") == pytest.approx(123.456)
        assert [l["device"] for _, l, _ in fams["sluice_gpu_power_watts"]["samples"]] == ["cuda:0"]
    finally:
        assert srv.stop() == 0, srv.stderr()
    srv = Server(env={"SLUICE_NVML_LIB": str(tmp_path / "missing.so")})  # absent NVML is no error
    try:
        assert not [n for n in scrape(srv) if n.startswith("sluice_gpu_")]
    finally:
        assert srv.stop() == 0, srv.stderr()


DOM_STUB = r"""
// A minimal DOM for the dashboard's script: elements remember what is written to them; canvases draw nothing.
const vm = require("vm"), fs = require("fs");
const [script, m1, m2] = [0, 1, 2].map(i => fs.readFileSync(process.argv[2 + i], "utf8"));
const els = {};
function el(id) {
  if (!els[id]) {
    const ctx = new Proxy({}, { get: (t, k) => (k in t ? t[k] : () => {}), set: (t, k, v) => { t[k] = v; return true; } });
    els[id] = { id, textContent: "", innerHTML: "", style: {}, firstChild: { nodeValue: "" }, clientWidth: 300,
                clientHeight: 56, width: 0, height: 0, getContext: () => ctx, onclick: null };
  }
  return els[id];
}
const texts = [m1, m2];
let calls = 0;
const errors = [];
const sandbox = {
  window: {}, document: { getElementById: el }, location: { hash: "", pathname: "/" }, history: { replaceState() {} },
  sessionStorage: { getItem: () => null, setItem() {} }, setInterval: () => 0, setTimeout, Date,
  console: { log() {}, error: (...a) => errors.push(a.join(" ")) },
  fetch: (url) => { calls++; const t = texts[Math.min(calls - 1, 1)];
                    return Promise.resolve({ status: 200, ok: url === "/metrics", text: () => Promise.resolve(t) }); },
};
sandbox.window.devicePixelRatio = 1;
vm.createContext(sandbox);
vm.runInContext(script, sandbox);
const d = sandbox.window.sluiceDashboard;
setTimeout(() => {
  const out = { samples: d.samples, errors: d.errors, status: el("status").textContent, model: el("model").textContent,
                tps: el("tps").firstChild.nodeValue, ttft: el("ttft").innerHTML, rw: el("rw").textContent,
                series: Object.keys(d.series), consoleErrors: errors };
  process.stdout.write(JSON.stringify(out));
}, 300);
"""


def test_dashboard_script_runs_on_real_metrics(logged, tmp_path):
    """The page's own script, run under node with a stub DOM, parses real scrapes and draws samples."""
    import shutil
    node = shutil.which("node")
    if not node:
        pytest.skip("node is not installed")
    srv, _ = logged
    page = requests.get(srv.base + "/", timeout=10).text
    script = re.search(r"<script>(.*)</script>", page, re.S).group(1)
    # the interval is replaced by a second explicit poll after the first has been drawn
    script = script.replace("setInterval(poll, 1000);", "setTimeout(poll, 20);")
    m1 = requests.get(srv.base + "/metrics", timeout=10).text
    srv.client().completions.create(model=MODEL, prompt="Once", max_tokens=6, extra_body={"ignore_eos": True})
    m2 = requests.get(srv.base + "/metrics", timeout=10).text
    files = []
    for name, text in (("dash.js", script), ("m1.txt", m1), ("m2.txt", m2), ("stub.js", DOM_STUB)):
        (tmp_path / name).write_text(text)
        files.append(str(tmp_path / name))
    r = subprocess.run([node, files[3]] + files[:3], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["errors"] == 0 and not out["consoleErrors"], out
    assert out["samples"] == 2, out
    assert out["model"] == MODEL
    assert float(out["tps"]) > 0, out  # six tokens between the two scrapes
    assert "p50" in out["ttft"] and "ms" in out["ttft"], out
    assert {"rps", "tps", "ttft50", "itl50", "kv", "run"} <= set(out["series"]), out


def test_promtool_finds_nothing_to_report(logged):
    """`promtool check metrics` (Debian's prometheus package, which setup.sh installs) lints the exposition:
    names, units, HELP/TYPE, counter suffixes. It must print nothing and succeed."""
    import shutil
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: ./setup.sh installs Debian's prometheus package, which has it"
    srv, _ = logged
    srv.client().completions.create(model=MODEL, prompt="Once", max_tokens=4)
    text = requests.get(srv.base + "/metrics", timeout=10).text
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr
