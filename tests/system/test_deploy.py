"""The deployment files (deploy/, Dockerfile; docs/deploy.md) checked offline and against a live
voicegate:

- every Kubernetes manifest validates against the Kubernetes schemas (kubernetes-validate, strict:
  unknown fields fail) at a pinned Kubernetes version; custom resources (KEDA, Prometheus
  Operator), whose schemas that package does not have, are checked for structure and for the
  fields voicegate relies on;
- the voicegate pods' and the compose nodes' environments pass ``voicegate serve --check-config``
  and name only real options; a wrong environment is refused with every problem listed;
- every metric the Grafana dashboard and the alert rules read exists on the /metrics of a live
  voicegate (echo backend, two workers) after one real call;
- on demand (`make image-test`, marker ``image``; minutes): the image builds with podman and
  the running container answers /healthz.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import kubernetes_validate
import pytest

from tests.support.cluster import redis_server
from tests.support.deploy import (
    DEPLOY,
    KUBE,
    ROOT,
    check_config,
    compose,
    compose_env,
    container_env,
    dashboard_exprs,
    families,
    family_of,
    interpolate,
    manifests,
    objects,
    one,
    promql_metrics,
    start_serve,
    stop,
)
from voicegate.cluster.directory import Directory, NodeInfo
from voicegate.config import OPTIONS, env_name
from voicegate.testing.client import CallClient, load_wav

K8S_VERSION = "1.34.0"
"""Pinned: the oldest Kubernetes release whose schemas kubernetes-validate 1.37.0 carries."""

CUSTOM_KINDS = {"ScaledObject", "PodMonitor", "PrometheusRule"}
OPTION_VARIABLES = {env_name(opt) for opt in OPTIONS}
POD_OWNERS = ("Deployment", "DaemonSet")


def voicegate_containers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) of every voicegate container in the manifests."""
    return [
        (doc, c)
        for kind in POD_OWNERS
        for doc in objects(kind)
        for c in doc["spec"]["template"]["spec"]["containers"]
        if c["name"] == "voicegate"
    ]


# -- Kubernetes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", sorted(KUBE.rglob("*.yaml")), ids=lambda p: str(p.relative_to(KUBE))
)
def test_manifest_validates_against_kubernetes_schemas(path: Path) -> None:
    docs = [doc for p, doc in manifests() if p == path]
    assert docs, f"{path} has no object"
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys()
        assert doc["metadata"]["name"]
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "voicegate", doc["metadata"]["name"]
        if doc["kind"] in CUSTOM_KINDS:
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            continue  # structure: test_custom_resources
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_schema_validation_can_fail() -> None:
    deployment = one("Deployment", "voicegate")
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)
    wrong = copy.deepcopy(deployment)
    wrong["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, K8S_VERSION, strict=True)


def test_custom_resources() -> None:
    """KEDA's ScaledObject and the Prometheus Operator's objects: the fields that matter."""
    pod_labels = one("Deployment", "voicegate")["spec"]["template"]["metadata"]["labels"]
    (scaled,) = objects("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "voicegate",
    }
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    meta = trigger["metadata"]
    assert meta["serverAddress"].startswith("http")
    assert promql_metrics(meta["query"]) == {"voicegate_calls_active"}
    assert isinstance(meta["threshold"], str) and float(meta["threshold"]) > 0
    hpa = one("HorizontalPodAutoscaler", "voicegate")
    assert hpa["spec"]["scaleTargetRef"] == spec["scaleTargetRef"]
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "voicegate_calls_active"

    (monitor,) = objects("PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    ports = {p["name"] for _, c in voicegate_containers() for p in c["ports"]}
    assert all(e["port"] in ports for e in monitor["spec"]["podMetricsEndpoints"])

    (rules,) = objects("PrometheusRule")
    for group in rules["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"[A-Z][A-Za-z]+", rule["alert"])
            assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s"))
            assert rule["labels"]["severity"] in ("warning", "critical")


def test_voicegate_pods_are_wired_for_a_cluster(tmp_path: Path) -> None:
    """Probes, the drain, the node URL from the downward API, secrets as files from a Secret
    that has them, the metrics port, selectors."""
    for workload, container in voicegate_containers():
        pod = workload["spec"]["template"]["spec"]
        env = container_env(container)
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        drain = float(env["VOICEGATE_DRAIN_TIMEOUT"])
        hook = container["lifecycle"]["preStop"]["exec"]["command"]
        assert "signal.SIGTERM" in hook[-1]
        waits = float(re.search(r"time\.sleep\((\d+)\)", hook[-1])[1])  # type: ignore[index]
        assert drain < waits < pod["terminationGracePeriodSeconds"]
        node_url = next(e for e in container["env"] if e["name"] == "VOICEGATE_NODE_URL")
        assert re.fullmatch(r"http://\$\((POD|HOST)_IP\):8080", node_url["value"])
        assert env["VOICEGATE_NODE_URL"] in ("http://10.1.2.3:8080", "http://10.0.0.7:8080")
        assert not any(
            "valueFrom" in e and "secretKeyRef" in e["valueFrom"] for e in container["env"]
        )
        files = container_env(container, pod, tmp_path / workload["metadata"]["name"])
        for name in ("VOICEGATE_AUTH_SECRET_FILE", "VOICEGATE_TURN_SECRET_FILE"):
            assert Path(files[name]).read_text().strip(), f"{name} is not a key of the Secret"
        metrics = {p["containerPort"] for p in container["ports"] if p["name"] == "metrics"}
        assert metrics == {int(env["VOICEGATE_METRICS_PORT"])}
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == env["VOICEGATE_METRICS_PORT"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert (
            "limits" not in container["resources"] or "cpu" not in container["resources"]["limits"]
        )
    labels = one("Deployment", "voicegate")["spec"]["template"]["metadata"]["labels"]
    for kind in ("PodDisruptionBudget", "Service"):
        selector = one(kind, "voicegate")["spec"]
        selector = selector.get("selector", {}).get("matchLabels", selector.get("selector"))
        assert selector.items() <= labels.items(), kind


def test_pod_environments_pass_check_config(tmp_path: Path) -> None:
    for workload, container in voicegate_containers():
        pod = workload["spec"]["template"]["spec"]
        env = container_env(container, pod, tmp_path / workload["metadata"]["name"])
        unknown = {k for k in env if k.startswith("VOICEGATE_")} - OPTION_VARIABLES
        assert not unknown, f"{workload['metadata']['name']}: not voicegate options: {unknown}"
        result = check_config(env)
        assert result.returncode == 0, result.stderr
        assert "configuration OK" in result.stdout and not result.stderr


def test_iam_policy_grants_only_the_stream_call_on_one_model() -> None:
    """The bidirectional-stream action (and bedrock:InvokeModel, which the API reference names
    for this operation: docs/deploy.md), on the one Nova Sonic model ARN, nothing else."""
    policy = json.loads((KUBE / "aws" / "iam-policy.json").read_text())
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Allow"
    assert set(statement["Action"]) == {
        "bedrock:InvokeModelWithBidirectionalStream",
        "bedrock:InvokeModel",
    }
    model = one("Deployment", "voicegate")
    (container,) = model["spec"]["template"]["spec"]["containers"]
    env = container_env(container)
    assert statement["Resource"] == (
        f"arn:aws:bedrock:{env['AWS_REGION']}::foundation-model/{env['VOICEGATE_MODEL_ID']}"
    )


# -- compose ---------------------------------------------------------------------------------------


def voicegate_services() -> dict[str, dict[str, Any]]:
    services = compose()["services"]
    return {name: s for name, s in services.items() if "VOICEGATE_HOST" in s.get("environment", {})}


def test_compose_has_two_nodes_redis_and_coturn() -> None:
    services = compose()["services"]
    assert set(voicegate_services()) == {"node-a", "node-b"}
    assert {"redis", "coturn"} <= set(services)
    urls = {compose_env(s)["VOICEGATE_NODE_URL"] for s in voicegate_services().values()}
    assert urls == {"http://node-a:8080", "http://node-b:8080"}
    for service in services.values():
        assert all(p.startswith("127.0.0.1:") for p in service.get("ports", []))


@pytest.mark.parametrize("name", ["node-a", "node-b"])
def test_compose_node_environment_passes_check_config(name: str) -> None:
    env = compose_env(voicegate_services()[name])
    assert not {k for k in env if k.startswith("VOICEGATE_")} - OPTION_VARIABLES
    result = check_config(env)
    assert result.returncode == 0, result.stderr
    assert "cluster: redis directory, node " + name in result.stdout


async def test_compose_redis_asks_for_the_password_its_nodes_use(tmp_path: Path) -> None:
    """The compose Redis, run with its own arguments, refuses a client without the password
    and takes the nodes' directory (the URL of their environment, pointed at this server)."""
    from redis.asyncio import Redis
    from redis.exceptions import AuthenticationError, ResponseError

    command = [interpolate(str(a)) for a in compose()["services"]["redis"]["command"]]
    assert command[0] == "redis-server" and "--requirepass" in command
    node_url = urlsplit(compose_env(voicegate_services()["node-a"])["VOICEGATE_CLUSTER_REDIS"])
    assert node_url.password
    async with redis_server(tmp_path, extra=command[1:]) as url:
        port = urlsplit(url).port
        anonymous = Redis(host="127.0.0.1", port=port)
        try:
            with pytest.raises((AuthenticationError, ResponseError), match="NOAUTH|[Aa]uth"):
                await anonymous.set("k", "v")
        finally:
            await anonymous.aclose()
        served = node_url._replace(netloc=f":{node_url.password}@127.0.0.1:{port}").geturl()
        directory = Directory(served, "node-a")
        try:
            await directory.heartbeat(NodeInfo("node-a", "http://node-a:8080", capacity=8))
            assert [n.id for n in await directory.nodes()] == ["node-a"]
            assert directory.up
        finally:
            await directory.aclose()


def test_wrong_environment_is_refused_with_every_problem() -> None:
    env = compose_env(voicegate_services()["node-a"])
    del env["VOICEGATE_AUTH_SECRET"]
    env |= {
        "VOICEGATE_CLUSTER_REDIS": "http://:hunter2-redis@redis:6379",
        "VOICEGATE_WORKERS": "zero",
        "VOICEGATE_MAX_SESION": "9",
    }
    result = check_config(env)
    assert result.returncode == 2
    assert "VOICEGATE_WORKERS: 'zero' is not a valid worker count" in result.stderr
    assert "set --auth-secret" in result.stderr
    assert "must be a redis://" in result.stderr
    # The refused URL is shown without its password.
    assert "'http://:***@redis:6379'" in result.stderr
    assert "hunter2-redis" not in result.stderr
    assert "VOICEGATE_MAX_SESION is not a voicegate serve option" in result.stderr
    assert result.stdout == ""


# -- metrics the dashboard and the alerts read ----------------------------------------------------

ONLY_AFTER_TROUBLE = {
    "voicegate_backend_errors_total",  # Bedrock errors
    "voicegate_stream_failures_total",  # mid-call stream failures
    "voicegate_handover_gap_seconds",  # renewals and recoveries of ended calls
}
"""Families declared from the start whose samples appear only once something happens."""


async def test_dashboard_and_alerts_read_only_live_metrics(
    speech_wav: Callable[[str], Path],
) -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "voicegate.json").read_text())
    wanted = {n for e in dashboard_exprs(dashboard) for n in promql_metrics(e)}
    rules = one("PrometheusRule", "voicegate")
    alerts = {
        n for g in rules["spec"]["groups"] for r in g["rules"] for n in promql_metrics(r["expr"])
    }
    assert {"voicegate_calls_active", "voicegate_turn_latency_seconds_bucket"} <= wanted
    assert alerts - {"up"} and all(n.startswith("voicegate_") for n in alerts - {"up"})

    speech = load_wav(speech_wav("checking the dashboard metrics on a live gateway"))
    proc, url = await asyncio.to_thread(start_serve, "--backend", "echo", "--workers", "2")
    client = CallClient(url)
    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(60):
                while True:  # both workers up
                    async with http.get(f"{url}/healthz") as resp:
                        if resp.status == 200 and (await resp.json()).get("ready"):
                            break
                    await asyncio.sleep(0.2)
                await client.connect(http)
                await client.wait_for("bot-ready", 15)
                client.mic.play(speech)
                await client.wait_for(
                    "server-message", 30, lambda m: m["data"].get("kind") == "turn-latency"
                )
                # A sample with the browser side's RTCP figures (RTT, loss) in it.
                await client.wait_for(
                    "server-message",
                    30,
                    lambda m: (
                        m["data"].get("kind") == "rtp-stats"
                        and m["data"].get("rtt_s") is not None
                        and m["data"].get("outbound_fraction_lost") is not None
                    ),
                )
                assert await client.hangup(http) == 204
                await asyncio.sleep(1.0)  # the supervisor's next poll of its workers
                async with http.get(f"{url}/metrics") as resp:
                    assert resp.status == 200
                    text = await resp.text()
    finally:
        await client.close()
        assert await asyncio.to_thread(stop, proc) == 0
    typed, sampled = families(text)
    for name in sorted(wanted | (alerts - {"up"})):
        family = family_of(name, typed)
        assert family is not None, f"{name} is not on /metrics"
        if family not in ONLY_AFTER_TROUBLE:
            assert any(s == family or s.startswith(family + "_") for s in sampled), name


# -- the container image (opt-in: minutes) ---------------------------------------------------------


@pytest.mark.image  # deselected by `make test`; `make image-test` runs it
@pytest.mark.timeout(1800)  # a cold build downloads every wheel
def test_image_builds_and_answers_healthz(tmp_path: Path) -> None:
    from tests.support.image_check import build_and_run_image

    build_and_run_image(ROOT, tmp_path)


def test_workers_start_from_secret_files(tmp_path: Path) -> None:
    """The pods' shape (secrets as files, several workers): each worker's environment, built by
    its supervisor, holds no secret; with the line the supervisor writes to the worker's stdin
    it is a valid configuration with the secrets the supervisor read."""
    import io

    from voicegate.cluster.handoff import receive, send_line
    from voicegate.cluster.workers import worker_env
    from voicegate.config import resolve

    (tmp_path / "auth").write_text("a-long-enough-auth-secret\n")
    (tmp_path / "turn").write_text("turn-secret\n")
    node = resolve(
        None,
        env={
            "VOICEGATE_AUTH_SECRET_FILE": str(tmp_path / "auth"),
            "VOICEGATE_TURN_SECRET_FILE": str(tmp_path / "turn"),
            "VOICEGATE_TURN_URLS": "turn:turn.example.com:3478",
            "VOICEGATE_WORKERS": "2",
        },
    )
    for index in range(2):
        env = worker_env(node, index, 2)
        secret_values = ("a-long-enough-auth-secret", "turn-secret")
        assert not [v for v in env.values() if v in secret_values], "a secret in a worker's env"
        secrets, key = receive(io.BytesIO(send_line(node, "worker-key")))
        assert key == "worker-key"
        worker = resolve(None, env={**env, **secrets})
        assert worker.auth_secret == "a-long-enough-auth-secret"
        assert worker.turn_secret == "turn-secret"
