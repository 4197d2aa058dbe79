"""The remote runtime for real on 127.0.0.1: a null worker served over TLS with a token.

A good token runs a benchmark; a wrong or missing one is refused with UNAUTHENTICATED; a worker
told to listen off loopback without TLS and a token refuses to start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import REPO_ROOT, SMALL_RUN, run_harness
from cxrbench.worker.v1 import worker_pb2, worker_pb2_grpc
from cxrbench_worker.transport_security import is_loopback
from harness.runtime.credentials import make_credentials
from harness.runtime.docker import free_port


@pytest.fixture(scope="module")
def tls_worker(tmp_path_factory):
    """A null worker on 127.0.0.1 with TLS and a token; yields (address, credentials)."""
    credentials = make_credentials(tmp_path_factory.mktemp("credentials"))
    port = free_port()
    log = open(tmp_path_factory.mktemp("log") / "worker.log", "w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "cxrbench_worker", "--worker-dir", str(REPO_ROOT / "workers" / "null"),
         "--address", f"127.0.0.1:{port}", "--tls-cert", str(credentials.certificate),
         "--tls-key", str(credentials.private_key), "--token-file", str(credentials.token)],
        stdout=log, stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while _health(address, credentials.certificate.read_bytes()) != "SERVING":
            assert process.poll() is None and time.monotonic() < deadline, log.seek(0) or log.read()
            time.sleep(0.2)
        yield address, credentials
    finally:
        process.terminate()
        process.wait(timeout=10)


def _secure_channel(address: str, root: bytes) -> grpc.Channel:
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=root),
                               options=[("grpc.ssl_target_name_override", "localhost")])


def _health(address: str, root: bytes) -> str | None:
    with _secure_channel(address, root) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return None
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def test_a_good_token_over_tls_runs_a_benchmark(tls_worker, tmp_path):
    address, credentials = tls_worker
    out = tmp_path / "results"
    result = run_harness(["benchmark", "--runtime", "remote", "--worker", f"null={address}", "--tls-ca",
                          str(credentials.certificate), "--token-file", str(credentials.token), "--epochs", "1",
                          "--out", str(out), *SMALL_RUN], REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert "null: test macro AUROC 0.5000" in result.stdout
    (run,) = out.iterdir()
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed"
    assert record["workers"]["null"]["runtime"] == "remote" and record["workers"]["null"]["address"] == address
    assert record["workers"]["null"]["tls"] is True and record["workers"]["null"]["token"] is True
    assert credentials.token.read_text().strip() not in (run / "run.json").read_text()  # the token is never recorded
    assert f"remote worker at `{address}` over TLS with a token" in (run / "report.md").read_text()


def test_a_wrong_token_is_refused_with_unauthenticated(tls_worker, tmp_path):
    address, credentials = tls_worker
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token\n")
    result = run_harness(["benchmark", "--runtime", "remote", "--worker", f"null={address}", "--tls-ca",
                          str(credentials.certificate), "--token-file", str(wrong), "--epochs", "1",
                          "--out", str(tmp_path / "results"), *SMALL_RUN], REPO_ROOT)
    assert result.returncode == 1
    assert "worker 'null'" in result.stderr and "UNAUTHENTICATED: wrong token" in result.stderr


def test_without_a_token_every_worker_rpc_is_refused_but_health_answers(tls_worker):
    address, credentials = tls_worker
    root = credentials.certificate.read_bytes()
    assert _health(address, root) == "SERVING"  # probes (Docker, Kubernetes) carry no token
    with _secure_channel(address, root) as channel:
        stub = worker_pb2_grpc.WorkerStub(channel)
        with pytest.raises(grpc.RpcError) as unary:
            stub.GetMetadata(worker_pb2.GetMetadataRequest(), timeout=5)
        with pytest.raises(grpc.RpcError) as streaming:
            list(stub.Train(iter([worker_pb2.TrainRequest()]), timeout=5))
        wrong = grpc.access_token_call_credentials("guess")
        with pytest.raises(grpc.RpcError) as guessed:
            stub.GetMetadata(worker_pb2.GetMetadataRequest(), timeout=5, credentials=wrong)
        good = grpc.access_token_call_credentials(credentials.token.read_text().strip())
        assert stub.GetMetadata(worker_pb2.GetMetadataRequest(), timeout=5, credentials=good).worker == "null"
    for caught, reason in ((unary, "missing bearer token"), (streaming, "missing bearer token"), (guessed, "wrong token")):
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED and reason in caught.value.details()


def test_a_plain_text_client_cannot_talk_to_a_tls_worker(tls_worker):
    address, _ = tls_worker
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@pytest.mark.parametrize("given, missing", [
    ([], "TLS (--tls-cert, --tls-key) and a token (--token-file)"),
    (["--token-file", "{token}"], "TLS (--tls-cert, --tls-key)"),
    (["--tls-cert", "{cert}", "--tls-key", "{key}"], "a token (--token-file)"),
])
def test_a_worker_off_loopback_refuses_to_start_without_tls_and_a_token(tmp_path, given, missing):
    credentials = make_credentials(tmp_path / "credentials")
    paths = {"token": credentials.token, "cert": credentials.certificate, "key": credentials.private_key}
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CXRBENCH_")}
    result = subprocess.run(
        [sys.executable, "-m", "cxrbench_worker", "--worker-dir", str(REPO_ROOT / "workers" / "null"),
         "--address", f"0.0.0.0:{free_port()}", *[part.format(**paths) for part in given]],
        capture_output=True, text=True, timeout=30, env=environment)
    assert result.returncode == 2
    assert f"off loopback, needs {missing}" in result.stderr


def test_the_harness_needs_a_token_and_tls_for_a_worker_off_loopback(tmp_path):
    result = run_harness(["benchmark", "--runtime", "remote", "--worker", "null=10.0.0.7:50051", "--epochs", "1",
                          "--out", str(tmp_path / "results"), *SMALL_RUN], REPO_ROOT,
                         env={"CXRBENCH_TOKEN": ""})
    assert result.returncode == 2
    assert "10.0.0.7:50051 needs a token (--token-file or $CXRBENCH_TOKEN)" in result.stderr


@pytest.mark.parametrize("arguments, message", [
    (["--runtime", "remote"], "--runtime remote needs at least one --worker NAME=HOST:PORT"),
    (["--runtime", "remote", "--worker", "null=localhost"], "must look like NAME=HOST:PORT"),
    (["--runtime", "remote", "--worker", "null=127.0.0.1:1", "--workers", "null,pytorch"], "no address for pytorch"),
    (["--worker", "null=127.0.0.1:1"], "--worker: addresses are for --runtime remote"),
])
def test_remote_settings_errors_name_the_flag(tmp_path, arguments, message):
    result = run_harness(["benchmark", *arguments, "--out", str(tmp_path / "results"), *SMALL_RUN], REPO_ROOT)
    assert result.returncode == 2 and message in result.stderr, result.stderr


@pytest.mark.parametrize("address, loopback", [
    ("unix:///tmp/w.sock", True), ("127.0.0.1:50051", True), ("127.8.0.1:1", True), ("localhost:1", True),
    ("[::1]:50051", True), ("0.0.0.0:50051", False), ("[::]:50051", False), ("10.0.0.7:50051", False),
    ("gpu1.example.org:50051", False),
])
def test_loopback_is_recognised(address, loopback):
    assert is_loopback(address) is loopback


def test_the_container_health_probe_answers_0_when_serving_and_1_otherwise(tls_worker):
    address, credentials = tls_worker
    port = address.rsplit(":", 1)[1]

    def probe(worker_address: str) -> int:
        environment = {**os.environ, "CXRBENCH_ADDRESS": worker_address, "CXRBENCH_TLS_CERT": str(credentials.certificate)}
        return subprocess.run([sys.executable, "-m", "cxrbench_worker.health_probe"], env=environment, timeout=30).returncode

    assert probe(f"0.0.0.0:{port}") == 0  # as in an image: it listens on all interfaces, the probe asks 127.0.0.1
    assert probe(f"0.0.0.0:{free_port()}") == 1


def test_credentials_command_writes_a_certificate_for_the_hosts_a_key_and_a_token(tmp_path):
    from cryptography import x509

    out = tmp_path / "creds"
    result = run_harness(["credentials", "--out", str(out), "--host", "gpu1.example.org", "--host", "10.0.0.7"], REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert "--tls-ca" in result.stdout and "--token-file" in result.stdout
    certificate = x509.load_pem_x509_certificate((out / "tls.crt").read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "gpu1.example.org"}
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1", "10.0.0.7"}
    assert len((out / "token").read_text().strip()) >= 40
    assert (out.stat().st_mode & 0o777) == 0o700 and ((out / "tls.key").stat().st_mode & 0o777) == 0o644
