"""Readers for the deployment files (tests/test_deploy.py): Kubernetes manifests, the compose
file's environment, PromQL metric names, a Prometheus scrape's families, a voicegate process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"

# Sample values for the downward API and Secrets when a pod's environment is checked.
FIELD_VALUES = {
    "status.podIP": "10.1.2.3",
    "status.hostIP": "10.0.0.7",
    "metadata.name": "voicegate-7d9f8c6b5-x2k4q",
    "spec.nodeName": "ip-10-0-0-7.ec2.internal",
}
SECRET_VALUE = "0123456789abcdef" * 4


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    """Every object of every YAML file under deploy/kubernetes/, with its file."""
    out = []
    for path in sorted(KUBE.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path, doc))
    return out


def objects(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [doc for doc in objects(kind) if doc["metadata"]["name"] == name]
    return found


def container_env(
    container: dict[str, Any], pod: dict[str, Any] | None = None, files: Path | None = None
) -> dict[str, str]:
    """A container's environment as the kubelet builds it: fieldRefs and Secrets given sample
    values, ``$(VAR)`` expanded from the variables defined before it. With ``pod`` and
    ``files``, the Secrets the container mounts are written under ``files`` (each key with a
    sample value) and paths into their mounts point there instead."""
    mounts = _secret_mounts(container, pod, files) if pod is not None and files else {}
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), str(item["value"]))
        elif "fieldRef" in item["valueFrom"]:
            value = FIELD_VALUES[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            assert "secretKeyRef" in item["valueFrom"], item
            value = SECRET_VALUE
        for mount, local in mounts.items():
            if value.startswith(mount + "/"):
                value = str(local) + value[len(mount) :]
        env[item["name"]] = value
    return env


def _secret_mounts(container: dict[str, Any], pod: dict[str, Any], files: Path) -> dict[str, Path]:
    """mountPath -> local directory holding the mounted Secret's keys (sample values)."""
    secrets = {
        v["name"]: v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v
    }
    out: dict[str, Path] = {}
    for mount in container.get("volumeMounts", []):
        if mount["name"] not in secrets:
            continue
        secret = one("Secret", secrets[mount["name"]])
        local = files / mount["name"]
        local.mkdir(parents=True, exist_ok=True)
        for key in secret["stringData"]:
            (local / key).write_text(SECRET_VALUE + "\n")
        out[mount["mountPath"].rstrip("/")] = local
    return out


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def interpolate(value: str) -> str:
    """Compose's ``${NAME:-default}`` with nothing set in the shell: the default."""
    out = re.sub(r"\$\{\w+:-([^}]*)\}", lambda m: m[1], value)
    assert "${" not in out, f"unsupported interpolation in {value!r}"
    return out


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment; pass-through entries (no value) are left out."""
    env = service.get("environment", {})
    assert isinstance(env, dict), "use the mapping form of environment"
    return {k: interpolate(str(v)) for k, v in env.items() if v is not None}


def check_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``voicegate serve --check-config`` in a clean environment plus ``env``."""
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT / "src"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    return subprocess.run(
        [sys.executable, "-m", "voicegate", "serve", "--check-config"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- PromQL and the exposition format ----------------------------------------------------------

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}


def promql_metrics(expr: str) -> set[str]:
    """Metric names an expression reads: what is left once strings, label matchers, ranges,
    grouping clauses, functions and keywords are taken out."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", s):
        if s[m.end() :].lstrip().startswith("(") or m[0] in _KEYWORDS:
            continue  # a function (or an aggregation) or a keyword
        names.add(m[0])
    return names


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            exprs += [t["expr"] for t in inner.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):
            m = re.match(r"label_values\((.*),\s*\w+\)$", query["query"])
            assert m, query
            exprs.append(m[1])
    return exprs


def families(text: str) -> tuple[dict[str, str], set[str]]:
    """(family -> type from # TYPE lines, names of the sample lines) of a scrape."""
    typed: dict[str, str] = {}
    sampled: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            typed[name] = kind
        elif line and not line.startswith("#"):
            sampled.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return typed, sampled


def family_of(name: str, typed: dict[str, str]) -> str | None:
    if name in typed:
        return name
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    return base if typed.get(base) == "histogram" else None


# -- a voicegate process -------------------------------------------------------------------------


def start_serve(*args: str) -> tuple[subprocess.Popen[str], str]:
    """``voicegate serve ARGS`` on 127.0.0.1, port 0: the process and its URL, once it listens.
    Blocking (call it through ``asyncio.to_thread`` from async tests)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "voicegate", "serve", "--host", "127.0.0.1", "--port", "0", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # the first "listening on" line is the node's
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            # Keep reading what follows, so a full pipe never stalls the server.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, m[1]
    stop(proc)
    raise AssertionError(f"voicegate exited with {proc.returncode} before listening")


def stop(proc: subprocess.Popen[str]) -> int:
    """SIGTERM (voicegate drains), then SIGKILL if it is still there after 30 s."""
    proc.terminate()
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)
