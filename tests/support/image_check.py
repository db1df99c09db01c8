"""The container image, built and run for real with podman (tests/test_deploy.py, opt-in with
`make image-test`, marker ``image``: the build takes minutes).

The image is built FROM a local base (scripts/local-image-base: Debian trixie made with
mmdebstrap) because no registry is assumed reachable, with the host's pip configuration mounted
(scripts/build-image --local). It then runs with the echo backend on the host network, as the
Kubernetes manifests run it: /healthz answers from outside, the image's HEALTHCHECK passes, the
auth secret is read from a mounted file, /metrics is served on its own port and not on the
public one, the process runs as the unprivileged user, a wrong environment is refused by
--check-config (exit 2), and SIGTERM drains and exits 0. Then the compose file's two nodes run
as containers of the image (their environment from deploy/compose.yaml, with loopback
addresses, a host redis-server and the echo backend in place of the compose network, Redis and
coturn images, which need a registry): both register in the Redis directory, a real call
through one of them carries audio both ways, and a stopped node exits 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support import cluster as cluster_util
from tests.support.components import require
from tests.support.deploy import compose, compose_env

IMAGE = "localhost/voicegate:image-test"
SECRET = "image-test-secret-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def build_and_run_image(root: Path, tmp: Path) -> None:
    for tool in ("podman", "mmdebstrap"):
        require(shutil.which(tool) is not None, f"{tool} is not installed")
    env = dict(os.environ)
    # Where crun cannot set rlimits (some sandboxes), runc with no default ulimits works.
    if "CONTAINERS_CONF" not in env:
        conf = tmp / "containers.conf"
        conf.write_text("[containers]\ndefault_ulimits = []\n")
        env["CONTAINERS_CONF"] = str(conf)
    runtime = ["--runtime", "runc"] if shutil.which("runc") else []
    if runtime:
        env.setdefault("OCI_RUNTIME", "runc")
    env["IMAGE"] = IMAGE
    build = subprocess.run(
        [str(root / "scripts" / "build-image"), "--local"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert build.returncode == 0, build.stderr[-4000:]

    podman = ["podman", *runtime]
    refused = subprocess.run(
        [*podman, "run", "--rm", "--network=host", "-e", "VOICEGATE_WORKERS=none", IMAGE,
         "serve", "--check-config"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "set --auth-secret" in refused.stderr  # the image listens on 0.0.0.0

    # As in the Kubernetes manifests: the secret as a mounted file, /metrics on its own port.
    port, metrics_port = _free_port(), _free_port()
    secrets = tmp / "secrets"
    secrets.mkdir()
    (secrets / "auth-secret").write_text(SECRET + "\n")
    name = f"voicegate-image-test-{port}"
    run = subprocess.run(
        [*podman, "run", "-d", "--name", name, "--network=host",
         "-v", f"{secrets}:/run/secrets/voicegate:ro",
         "-e", "VOICEGATE_AUTH_SECRET_FILE=/run/secrets/voicegate/auth-secret",
         "-e", "VOICEGATE_BACKEND=echo", "-e", f"VOICEGATE_PORT={port}",
         "-e", "VOICEGATE_METRICS_HOST=127.0.0.1", "-e", f"VOICEGATE_METRICS_PORT={metrics_port}",
         "-e", "VOICEGATE_WORKERS=2", IMAGE],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    try:
        health = _wait_healthz(f"http://127.0.0.1:{port}/healthz", 90)
        assert health["status"] == "ok" and health["backend"] == "echo"
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            assert b"voicegate_calls_active" in r.read()
        with pytest.raises(urllib.error.HTTPError) as refused_metrics:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert refused_metrics.value.code == 404  # not on the public port
        check = subprocess.run(
            ["podman", "healthcheck", "run", name], env=env, capture_output=True, timeout=60
        )
        assert check.returncode == 0, "the image's HEALTHCHECK failed"
        user = subprocess.run(
            ["podman", "inspect", name, "--format", "{{.Config.User}}"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert user.stdout.strip() == "10001:10001"
        stopped = subprocess.run(
            ["podman", "stop", "-t", "40", name], env=env, capture_output=True, timeout=90
        )
        assert stopped.returncode == 0
        code = subprocess.run(
            ["podman", "inspect", name, "--format", "{{.State.ExitCode}}"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert code.stdout.strip() == "0", "SIGTERM should drain and exit 0"
        logs = subprocess.run(
            ["podman", "logs", name], env=env, capture_output=True, text=True, timeout=60
        )
        assert '"event": "drained"' in logs.stdout + logs.stderr
    finally:
        subprocess.run(["podman", "rm", "-f", name], env=env, capture_output=True, timeout=60)
    asyncio.run(_compose_nodes(podman, env, tmp))


def _wait_healthz(url: str, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                body: dict[str, object] = json.load(resp)
                return body
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


async def _compose_nodes(podman: list[str], env: dict[str, str], tmp: Path) -> None:
    """deploy/compose.yaml's node-a and node-b as containers of the image, on loopback."""
    import redis.asyncio as aioredis

    services = compose()["services"]
    started: list[str] = []
    async with cluster_util.redis_server(tmp) as redis_url:
        urls = {}
        for node in ("node-a", "node-b"):
            port = _free_port()
            node_env = compose_env(services[node])
            for name in ("VOICEGATE_TURN_URLS", "VOICEGATE_TURN_SECRET"):
                del node_env[name]  # no coturn here; media over loopback
            node_env |= {
                "VOICEGATE_PORT": str(port),
                "VOICEGATE_NODE_URL": f"http://127.0.0.1:{port}",
                "VOICEGATE_CLUSTER_REDIS": redis_url,
                "VOICEGATE_BACKEND": "echo",
                "VOICEGATE_ICE_ADDRESSES": "127.0.0.1",
                "VOICEGATE_AUTH_SECRET": cluster_util.SECRET,
            }
            flags = [f for k, v in node_env.items() for f in ("-e", f"{k}={v}")]
            cmd = [*podman, "run", "-d", "--name", f"vg-{node}-{port}", "--network=host", *flags]
            run = await asyncio.to_thread(
                subprocess.run, [*cmd, IMAGE], env=env, capture_output=True, text=True
            )
            assert run.returncode == 0, run.stderr
            started.append(f"vg-{node}-{port}")
            urls[node] = f"http://127.0.0.1:{port}"
        try:
            for url in urls.values():
                await asyncio.to_thread(_wait_healthz, f"{url}/healthz", 90)
            client = aioredis.from_url(redis_url)
            try:
                for _ in range(75):  # each node beats every second
                    members = {m.decode() for m in await client.smembers("vg:nodes")}
                    if members == set(urls):
                        break
                    await asyncio.sleep(0.2)
                else:
                    raise AssertionError(f"nodes in the directory: {members}")
            finally:
                await client.aclose()
            call = await cluster_util.start_call(urls["node-b"])
            try:
                assert await cluster_util.receiving(call)
                assert await call.hangup() == 204
            finally:
                await call.close()
            stopped = await asyncio.to_thread(
                subprocess.run, ["podman", "stop", "-t", "40", started[0]], env=env,
                capture_output=True,
            )  # fmt: skip
            assert stopped.returncode == 0
            inspect = ["podman", "inspect", started[0], "--format", "{{.State.ExitCode}}"]
            code = await asyncio.to_thread(
                subprocess.run, inspect, env=env, capture_output=True, text=True
            )
            assert code.stdout.strip() == "0"
        finally:
            for name in started:
                await asyncio.to_thread(
                    subprocess.run, ["podman", "rm", "-f", name], env=env, capture_output=True
                )
