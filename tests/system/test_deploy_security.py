"""The shipped Kubernetes manifests keep the cluster closed, checked by parsing them (as
test_deploy does) and, for Redis, by running the manifest's own command:

- every voicegate pod (the hostNetwork DaemonSet above all, whose metrics port is on the node's
  address) requires a bearer token on /metrics, read from a key of its mounted Secret, and the
  PodMonitor sends that same key;
- Redis requires a password, set from the Secret on stdin (in no argument or environment
  variable), which every voicegate pod reads from the same key; the redis container's command,
  run here with a real redis-server, refuses a client without it;
- Redis's NetworkPolicy admits voicegate's pods and the hostNetwork DaemonSet (by the nodes'
  subnet: no podSelector matches a hostNetwork pod), and nothing else;
- the DaemonSet, reachable without the ingress, honours X-Forwarded-For only from listed proxies.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import free_port
from tests.support.components import require
from tests.support.deploy import container_env, objects, one

SECRET_DIR = "/var/run/secrets/voicegate/"


def _voicegate_pods() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (doc, c)
        for kind in ("Deployment", "DaemonSet")
        for doc in objects(kind)
        for c in doc["spec"]["template"]["spec"]["containers"]
        if c["name"] == "voicegate"
    ]


def _secret_keys() -> set[str]:
    return set(one("Secret", "voicegate-secrets")["stringData"])


def test_metrics_need_a_token_from_the_secret() -> None:
    pods = _voicegate_pods()
    assert {w["kind"] for w, _ in pods} == {"Deployment", "DaemonSet"}
    for workload, container in pods:
        env = container_env(container)
        name = workload["metadata"]["name"]
        assert "VOICEGATE_METRICS_TOKEN" not in env, f"{name}: a token in the environment"
        path = env.get("VOICEGATE_METRICS_TOKEN_FILE", "")
        assert path.startswith(SECRET_DIR), f"{name}: /metrics has no token"
        assert path.removeprefix(SECRET_DIR) in _secret_keys()
        assert env["VOICEGATE_METRICS_HOST"] != "0.0.0.0"
    (endpoint,) = one("PodMonitor", "voicegate")["spec"]["podMetricsEndpoints"]
    auth = endpoint["authorization"]
    assert auth["type"] == "Bearer"
    assert auth["credentials"] == {"name": "voicegate-secrets", "key": "metrics-token"}


def test_the_daemonset_trusts_forwarded_for_only_from_listed_proxies() -> None:
    daemonset = one("DaemonSet", "voicegate-media")
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    env = container_env(container)
    assert env.get("VOICEGATE_TRUST_FORWARDED_FOR", "false") != "true"
    assert env["VOICEGATE_TRUSTED_PROXIES"]


def _redis() -> dict[str, Any]:
    (container,) = one("Deployment", "redis")["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_redis_password_comes_from_the_secret_both_sides() -> None:
    redis = _redis()
    script = redis["args"][0]
    assert redis["command"] == ["sh", "-c"]
    assert "requirepass $(cat /var/run/secrets/redis/redis-password)" in script
    assert "env" not in redis  # the password in no variable
    pod = one("Deployment", "redis")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "voicegate-secrets"
    assert volume["secret"]["items"] == [{"key": "redis-password", "path": "redis-password"}]
    probe = " ".join(redis["readinessProbe"]["exec"]["command"])
    assert "REDISCLI_AUTH" in probe and "grep -q PONG" in probe
    for workload, container in _voicegate_pods():
        env = container_env(container)
        path = env["VOICEGATE_CLUSTER_REDIS_PASSWORD_FILE"]
        assert path == SECRET_DIR + "redis-password", workload["metadata"]["name"]
        assert "@" not in env["VOICEGATE_CLUSTER_REDIS"]  # no password in the URL


async def _cli(port: int, *args: str, password: str | None = None) -> str:
    exe = shutil.which("redis-cli")
    assert exe is not None
    env = {"REDISCLI_AUTH": password} if password else {}
    proc = await asyncio.create_subprocess_exec(
        exe, "-p", str(port), *args, env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return out.decode().strip()


async def test_the_redis_command_refuses_clients_without_the_password(tmp_path: Path) -> None:
    """The manifest's own shell command, paths pointed into tmp_path, with a real redis-server."""
    require(shutil.which("redis-server") is not None, "redis-server is not installed")
    require(shutil.which("redis-cli") is not None, "redis-cli is not installed")
    (tmp_path / "redis-password").write_text("manifest-test-password\n")
    port = free_port()
    script = (
        _redis()["args"][0]
        .replace("/var/run/secrets/redis", str(tmp_path))
        .replace("redis-server -", f"redis-server - --port {port} --dir {tmp_path}", 1)
    )
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", script, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        async with asyncio.timeout(10):
            while True:  # until it listens
                try:
                    _, w = await asyncio.open_connection("127.0.0.1", port)
                    w.close()
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            assert "NOAUTH" in await _cli(port, "SET", "vg:node:evil", "{}")
            assert await _cli(port, "PING", password="manifest-test-password") == "PONG"
            assert (
                await _cli(port, "EXISTS", "vg:node:evil", password="manifest-test-password") == "0"
            )
            # The password is in no argument of the running server.
            cmdline = await asyncio.to_thread(Path(f"/proc/{proc.pid}/cmdline").read_bytes)
            assert b"manifest-test-password" not in cmdline
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_redis_policy_admits_voicegate_and_the_hostnetwork_nodes_only() -> None:
    policy = one("NetworkPolicy", "redis")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    redis_labels = one("Deployment", "redis")["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= redis_labels.items()
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    peers = rule["from"]
    selectors = [p["podSelector"]["matchLabels"] for p in peers if "podSelector" in p]
    blocks = [p["ipBlock"]["cidr"] for p in peers if "ipBlock" in p]
    assert len(selectors) + len(blocks) == len(peers) and blocks and selectors
    for workload, _ in _voicegate_pods():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        host_network = workload["spec"]["template"]["spec"].get("hostNetwork", False)
        if not host_network:
            assert any(s.items() <= labels.items() for s in selectors), workload["metadata"]
    for cidr in blocks:
        assert cidr not in ("0.0.0.0/0", "::/0"), "the whole internet admitted"


@pytest.mark.parametrize("key", ["metrics-token", "redis-password"])
def test_example_secret_has_the_new_keys(key: str) -> None:
    assert key in _secret_keys()
