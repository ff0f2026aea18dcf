"""Replicas end to end: `sluice serve --devices cpu,cpu` on the tiny model (DESIGN.md §4).

/ready reports the replicas; a request pins a replica with the body field "sluice_replica" (or the header
X-Sluice-Replica); a bad pin is a 400 naming the field; a device fault injected into replica 1
(SLUICE_FAULT_INJECT=matmul:1@1: its first matmul fails) takes it out of service, which /ready, /metrics and
later pinned requests show, while replica 0 keeps serving. With every replica out, /ready answers 503.
"""
import os
import subprocess

import pytest
import requests

from sluice_server import MODEL, Server
from test_metrics import parse_metrics, value


def complete(srv, body=None, headers=None, **fields):
    body = dict(body or {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 4, "temperature": 0}, **fields)
    return requests.post(srv.base + "/v1/completions", json=body, headers=headers or {}, timeout=30)


def metrics(srv):
    r = requests.get(srv.base + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    return parse_metrics(r.text)


@pytest.fixture(scope="module")
def srv():
    s = Server("--devices", "cpu,cpu", env={"SLUICE_FAULT_INJECT": "matmul:1@1"})
    yield s
    s.stop()


def test_ready_and_gauges_before_any_failure(srv):
    r = requests.get(srv.base + "/ready", timeout=10)
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "replicas": 2, "replicas_ready": 2}
    m = metrics(srv)
    assert value(m, "sluice_replicas", model_name=MODEL) == 2
    assert value(m, "sluice_replicas_ready", model_name=MODEL) == 2


def test_bad_pins_are_400_naming_the_field(srv):
    for bad in (2, 99, -2):
        r = complete(srv, sluice_replica=bad)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "sluice_replica"
        assert "sluice_replica" in err["message"] and "2 replicas" in err["message"], err
    r = complete(srv, sluice_replica="1")
    assert r.status_code == 400 and r.json()["error"]["param"] == "sluice_replica"
    r = requests.post(srv.base + "/v1/embeddings", json={"model": MODEL, "input": "hi", "sluice_replica": 7}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "sluice_replica"


def test_header_pins_and_bad_header_is_400(srv):
    r = complete(srv, headers={"X-Sluice-Replica": "5"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "X-Sluice-Replica"
    r = complete(srv, headers={"X-Sluice-Replica": "0"})
    assert r.status_code == 200, r.text


def test_pinned_to_healthy_replica_succeeds(srv):
    for _ in range(3):
        r = complete(srv, sluice_replica=0)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["finish_reason"] == "length"


def test_device_fault_takes_replica_1_out(srv):
    # Replica 1's first matmul fails: the request pinned there ends with a 503 naming the replica and the op.
    r = complete(srv, sluice_replica=1)
    assert r.status_code == 503, r.text
    msg = r.json()["error"]["message"]
    assert "replica 1" in msg and "matmul" in msg, msg
    r = requests.get(srv.base + "/ready", timeout=10)
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "replicas": 2, "replicas_ready": 1}
    m = metrics(srv)
    assert value(m, "sluice_replicas", model_name=MODEL) == 2
    assert value(m, "sluice_replicas_ready", model_name=MODEL) == 1
    # Pinned to the dead replica (by the body field, then by the header): refused at once, with no Retry-After
    # (the replica does not come back); anything else goes to replica 0 and succeeds.
    r = complete(srv, sluice_replica=1)
    assert r.status_code == 503, r.text
    assert "replica 1 is out of service" in r.json()["error"]["message"]
    assert "Retry-After" not in r.headers, r.headers
    r = complete(srv, headers={"X-Sluice-Replica": "1"})
    assert r.status_code == 503, r.text
    assert "replica 1 is out of service" in r.json()["error"]["message"]
    for _ in range(4):
        r = complete(srv)
        assert r.status_code == 200, r.text


def test_ready_is_503_when_no_replica_is_left():
    s = Server("--devices", "cpu", env={"SLUICE_FAULT_INJECT": "matmul:1"})
    try:
        r = complete(s)
        assert r.status_code == 503, r.text
        r = requests.get(s.base + "/ready", timeout=10)
        assert r.status_code == 503
        err = r.json()["error"]
        assert "no replica is in service" in err["message"] and err["type"] == "server_error", err
        assert "Retry-After" not in r.headers, r.headers  # for good: waiting does not cure it
        assert value(metrics(s), "sluice_replicas_ready", model_name=MODEL) == 0
    finally:
        s.stop()


def test_settings_in_help_print_config_and_refusals():
    exe = os.environ["SLUICE_BIN"]
    out = subprocess.run([exe, "serve", "--help"], capture_output=True, text=True, timeout=30)
    text = out.stdout + out.stderr
    assert "--devices" in text and "--tensor-parallel-size" in text and "SLUICE_DEVICES" in text
    out = subprocess.run([exe, "serve", "--devices", "cpu,cpu", "--print-config"], capture_output=True, text=True,
                         timeout=30)
    assert "devices: " in out.stdout and "cpu,cpu" in out.stdout and "tensor_parallel_size: 1" in out.stdout
    out = subprocess.run([exe, "serve", "--print-config"], capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, SLUICE_DEVICES="cpu,cpu,cpu"))
    assert "cpu,cpu,cpu" in out.stdout
    out = subprocess.run([exe, "serve", "--tensor-parallel-size", "0", "--print-config"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode != 0 and "tensor-parallel-size" in out.stderr


def test_bad_device_list_stops_the_server_with_a_clear_message():
    with pytest.raises(RuntimeError) as ei:
        Server("--devices", "cpu,cpu,cpu", "--tensor-parallel-size", "2", timeout=30)
    assert "not a multiple of tensor_parallel_size 2" in str(ei.value)
