#!/usr/bin/env python3
"""Validates rendered aft-sidecar Kubernetes manifests.

Each FILE is one rendered bundle (the output of `kustomize build` of one
overlay, or a plain multi-document YAML file). Checks, in order:

1. Schema: every object against the Kubernetes OpenAPI schemas bundled with
   the `kubernetes-validate` package, in strict mode (unknown fields are
   errors), for each --k8s-version. An unknown kind/apiVersion is an error
   (the package itself only warns).
2. Generic hygiene for every pod template: pinned images, resource requests
   and limits, non-root / read-only root fs / no privilege escalation, env
   variables that are either a value or a reference (never both), $(VAR)
   references that Kubernetes can expand, references to Secrets/ConfigMaps
   that exist in the bundle (or are optional), selectors that select.
3. aft-sidecar rules, for each workload with a container named aft-sidecar:
   the storage URL never on the command line and never with a literal
   password; the TOML config in the ConfigMap uses only keys documented in
   docs/CONFIG.md; probes on /ready and /health of the metrics port, which
   is what Prometheus scrapes; terminationGracePeriodSeconds >=
   shutdown_grace_secs + 5; peer port, peer discovery, headless Service and
   PodDisruptionBudget agree. By shape:
   - DaemonSet (sidecars next to node-local executors): the IPC directory is
     a hostPath at ipc_dir; AFT_NODE_ADDRESS from status.hostIP on the host
     network (status.podIP otherwise); maxSurge 0.
   - Deployment (a gRPC front for functions on no sidecar's node): gRPC on;
     no host network, AFT_NODE_ADDRESS from status.podIP; no hostPath, the
     IPC directory a subdirectory of an emptyDir; replicas >= 2, no Recreate.
   - gRPC (whenever grpc_addr is set): containerPort `grpc` matches
     grpc_addr; a Service selects the pods and exposes it (ready pods only);
     authentication configured (a token file or a client CA, each a file of
     a mounted Secret) unless grpc_insecure is explicit; TLS cert and key
     together, from a Secret; no Service takes the port outside the cluster
     (LoadBalancer, NodePort, externalIPs) without TLS.
4. With --binary: every flag used in args exists in the real aft-sidecar's
   --help (flags listed as planned in docs/CONFIG.md only warn), and the
   binary, run with the pod's args, literal environment and config file
   (secrets replaced by stand-ins), accepts the configuration.

--self-test FILE applies a list of deliberate breakages to a good bundle (the
DaemonSet list, or the gRPC Deployment list when the bundle runs the sidecar
as a Deployment) and fails unless every one of them is reported (and the
unbroken bundle passes).

Exit status: 0 when everything passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import atexit
import copy
import functools
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import yaml

try:
    import kubernetes_validate.utils as kv
except ImportError:  # pragma: no cover - validate.sh installs it
    sys.exit("check_manifests.py: the kubernetes-validate package is missing "
             "(run cluster/validate.sh, which installs it into .venv)")

# The package re-reads the (large) definitions file for every object: cache.
kv.schema_contents = functools.lru_cache(maxsize=None)(kv.schema_contents)

SIDECAR_CONTAINER = "aft-sidecar"
# Workloads that run the sidecar: next to node-local executors (DaemonSet),
# or as a gRPC front for functions that share no node with it (Deployment).
SIDECAR_KINDS = ("DaemonSet", "Deployment")
WORKLOAD_KINDS = {"DaemonSet", "StatefulSet", "Deployment", "ReplicaSet", "Job"}
ROOT_INIT_CAPS = {"CHOWN", "FOWNER", "DAC_OVERRIDE"}
DEFAULTS = {  # sidecar/src/config.rs
    "ipc_dir": "/requests",
    # metrics_addr: the node address, port 9464 (see effective()).
    "storage_timeout_ms": 2000,
    "shutdown_grace_secs": 10,
    "peer_port": 7150,
    "peer_mode": "off",
    "allow_world_writable_ipc_dir": False,
    "grpc_insecure": False,
}
# Settings naming a file that holds a secret: a key of a mounted Secret.
SECRET_FILE_KEYS = ("peer_key_file", "grpc_token_file", "grpc_tls_cert", "grpc_tls_key",
                    "grpc_tls_client_ca")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
VAR_REF = re.compile(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
FLAG = re.compile(r"--[a-z][a-z0-9-]*")


# --------------------------------------------------------------------------
# docs/CONFIG.md


@dataclass
class ConfigDocs:
    """The settings docs/CONFIG.md documents (reference table) or announces (planned)."""

    flags: set[str] = field(default_factory=set)
    envs: set[str] = field(default_factory=set)
    toml_keys: set[str] = field(default_factory=set)
    planned_flags: set[str] = field(default_factory=set)
    planned_envs: set[str] = field(default_factory=set)
    planned_toml_keys: set[str] = field(default_factory=set)


def parse_config_docs(path: str) -> ConfigDocs:
    docs = ConfigDocs()
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for section, planned in (("config-reference", False), ("config-planned", True)):
        m = re.search(rf"(?ms)^<!-- {section}:begin -->$(.*?)^<!-- {section}:end -->$", text)
        if not m:
            if planned:
                continue
            raise SystemExit(f"{path}: no <!-- {section}:begin/end --> markers")
        for line in m.group(1).splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) < 3 or not cells[0].startswith("`--"):
                continue
            flag = FLAG.search(cells[0]).group(0)
            env = re.search(r"AFT_[A-Z0-9_]+", cells[1])
            key = re.search(r"`([a-z0-9_]+)`", cells[2])
            (docs.planned_flags if planned else docs.flags).add(flag)
            if env:
                (docs.planned_envs if planned else docs.envs).add(env.group(0))
            if key:
                (docs.planned_toml_keys if planned else docs.toml_keys).add(key.group(1))
    if not docs.flags:
        raise SystemExit(f"{path}: the reference table lists no flags")
    return docs


# --------------------------------------------------------------------------
# findings


class Findings:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, where: str, msg: str) -> None:
        self.errors.append(f"{where}: {msg}")

    def warn(self, where: str, msg: str) -> None:
        self.warnings.append(f"{where}: {msg}")


def kn(obj: dict) -> str:
    md = obj.get("metadata") or {}
    return f"{obj.get('kind', '?')}/{md.get('name', '?')}"


# --------------------------------------------------------------------------
# schema


def check_schema(objs: list[dict], versions: list[str], out: Findings, where: str) -> None:
    for obj in objs:
        if not isinstance(obj, dict) or "kind" not in obj or "apiVersion" not in obj:
            out.error(where, f"not a Kubernetes object: {str(obj)[:80]}")
            continue
        for version in versions:
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                out.error(where, f"{kn(obj)} does not validate against Kubernetes "
                                 f"{e.version}: {path}: {e.message}")
                break
            except kv.SchemaNotFoundError as e:
                out.error(where, f"{kn(obj)}: {e.message}")
                break
            except Exception as e:  # noqa: BLE001 - report, don't crash
                out.error(where, f"{kn(obj)} could not be validated: {e}")
                break


# --------------------------------------------------------------------------
# pod templates


def pod_template(obj: dict) -> dict | None:
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind in WORKLOAD_KINDS:
        return spec.get("template")
    if kind == "CronJob":
        return ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
    if kind == "Pod":
        return obj
    return None


def labels_match(selector: dict | None, labels: dict) -> bool:
    """Whether a Service selector (a plain map) or a LabelSelector selects `labels`.

    matchExpressions are not evaluated (these manifests use none): a selector
    with only expressions counts as selecting nothing.
    """
    if selector is None:
        return False
    if "matchLabels" in selector or "matchExpressions" in selector:
        if selector.get("matchExpressions"):
            return False
        match = selector.get("matchLabels") or {}
    else:
        match = selector
    return all(labels.get(k) == v for k, v in match.items())


def image_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last and not last.endswith(":latest")


def check_pod_templates(objs: list[dict], out: Findings, where: str) -> None:
    by_kind_name = {(o.get("kind"), (o.get("metadata") or {}).get("name")) for o in objs}
    for obj in objs:
        tpl = pod_template(obj)
        if tpl is None:
            continue
        name = kn(obj)
        spec = tpl.get("spec") or {}
        pod_sc = spec.get("securityContext") or {}
        if spec.get("automountServiceAccountToken") is not False:
            out.error(where, f"{name}: automountServiceAccountToken must be false "
                             "(nothing here calls the Kubernetes API)")
        if spec.get("enableServiceLinks") is not False:
            out.error(where, f"{name}: enableServiceLinks must be false (service link "
                             "variables can collide with AFT_* settings)")
        volumes = {v.get("name"): v for v in spec.get("volumes") or []}
        for claim in (obj.get("spec") or {}).get("volumeClaimTemplates") or []:
            volumes.setdefault((claim.get("metadata") or {}).get("name"), {})
        for vol in volumes.values():
            for kind, key in (("ConfigMap", "configMap"), ("Secret", "secret")):
                ref = vol.get(key)
                if ref is None:
                    continue
                ref_name = ref.get("name") if kind == "ConfigMap" else ref.get("secretName")
                if (kind, ref_name) not in by_kind_name and not ref.get("optional"):
                    out.error(where, f"{name}: volume {vol.get('name')} names {kind} "
                                     f"{ref_name}, which is not in this bundle")
        for is_init, ctr in [(True, c) for c in spec.get("initContainers") or []] + \
                            [(False, c) for c in spec.get("containers") or []]:
            cname = f"{name} container {ctr.get('name')}"
            image = str(ctr.get("image", ""))
            if not image_pinned(image):
                out.error(where, f"{cname}: image `{image}` has no tag or digest (or is :latest)")
            res = ctr.get("resources") or {}
            for part, keys in (("requests", ("cpu", "memory")), ("limits", ("memory",))):
                for k in keys:
                    if k not in (res.get(part) or {}):
                        out.error(where, f"{cname}: resources.{part}.{k} is not set")
            sc = ctr.get("securityContext") or {}
            if sc.get("allowPrivilegeEscalation") is not False:
                out.error(where, f"{cname}: securityContext.allowPrivilegeEscalation must be false")
            if sc.get("readOnlyRootFilesystem") is not True:
                out.error(where, f"{cname}: securityContext.readOnlyRootFilesystem must be true")
            caps = sc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                out.error(where, f"{cname}: securityContext.capabilities.drop must include ALL")
            if sc.get("privileged"):
                out.error(where, f"{cname}: must not be privileged")
            run_as_user = sc.get("runAsUser", pod_sc.get("runAsUser"))
            non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
            is_root = run_as_user == 0 or non_root is not True
            if is_root:
                added = set(caps.get("add") or [])
                if not is_init:
                    out.error(where, f"{cname}: must run as non-root "
                                     "(runAsNonRoot: true, runAsUser != 0)")
                elif not added <= ROOT_INIT_CAPS:
                    out.error(where, f"{cname}: a root init container may add only "
                                     f"{sorted(ROOT_INIT_CAPS)}, not {sorted(added)}")
            if not is_init:
                for probe in ("readinessProbe", "livenessProbe"):
                    if probe not in ctr:
                        out.error(where, f"{cname}: no {probe}")
            check_env(ctr, by_kind_name, out, where, cname)
            for mount in ctr.get("volumeMounts") or []:
                if mount.get("name") not in volumes:
                    out.error(where, f"{cname}: volumeMount {mount.get('name')} has no volume")


def check_env(ctr: dict, by_kind_name: set, out: Findings, where: str, cname: str) -> None:
    defined: set[str] = set()
    all_names = {e.get("name") for e in ctr.get("env") or []}
    for env in ctr.get("env") or []:
        ename = env.get("name")
        if "value" in env and "valueFrom" in env:
            out.error(where, f"{cname}: env {ename} has both value and valueFrom")
        if "value" in env:
            for ref in VAR_REF.findall(str(env.get("value"))):
                if ref not in defined:
                    out.error(where, f"{cname}: env {ename} refers to $({ref}), which is "
                                     "not defined before it (Kubernetes would not expand it)")
        vf = env.get("valueFrom") or {}
        for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
            ref = vf.get(key)
            if ref and (kind, ref.get("name")) not in by_kind_name and not ref.get("optional"):
                out.error(where, f"{cname}: env {ename} reads {kind} {ref.get('name')}, "
                                 "which is not in this bundle (and is not optional)")
        defined.add(ename)
    for arg in list(ctr.get("command") or []) + list(ctr.get("args") or []):
        for ref in VAR_REF.findall(str(arg)):
            if ref not in all_names:
                out.error(where, f"{cname}: argument `{arg}` refers to undefined $({ref})")


def check_selectors(objs: list[dict], out: Findings, where: str) -> None:
    pods = []
    for o in objs:
        tpl = pod_template(o)
        if tpl is not None:
            pods.append((o, tpl))
    for obj in objs:
        kind = obj.get("kind")
        spec = obj.get("spec") or {}
        if kind == "Service":
            sel = spec.get("selector")
            if not sel:
                continue
            matched = [(o, t) for o, t in pods
                       if labels_match(sel, (t.get("metadata") or {}).get("labels") or {})]
            if not matched:
                out.error(where, f"{kn(obj)}: selector {sel} selects no pod template")
                continue
            for port in spec.get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                if isinstance(target, str):
                    names = {p.get("name") for _, t in matched
                             for c in (t.get("spec") or {}).get("containers") or []
                             for p in c.get("ports") or []}
                    if target not in names:
                        out.error(where, f"{kn(obj)}: targetPort `{target}` is no "
                                         "named port of the selected pods")
        elif kind in ("PodDisruptionBudget", "NetworkPolicy"):
            sel = spec.get("selector") if kind == "PodDisruptionBudget" else spec.get("podSelector")
            if not any(labels_match(sel, (t.get("metadata") or {}).get("labels") or {})
                       for _, t in pods):
                out.error(where, f"{kn(obj)}: selector {sel} selects no pod template")


# --------------------------------------------------------------------------
# aft-sidecar rules


def arg_value(args: list[str], flag: str) -> str | None:
    """The value of `--flag=V` or `--flag V` in args (the last one wins)."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1:]
    return value


def has_literal_password(url: str, secret_vars: set[str]) -> bool:
    """True if URL's userinfo holds anything but $(VAR)s sourced from Secrets."""
    m = re.match(r"^[a-z0-9+.-]+://([^/]*)@", url)
    if not m:
        return False
    userinfo = m.group(1)
    password = userinfo.split(":", 1)[1] if ":" in userinfo else userinfo
    if not password:
        return False
    rest = VAR_REF.sub("", password)
    refs = VAR_REF.findall(password)
    return bool(rest) or any(r not in secret_vars for r in refs)


@dataclass
class Sidecar:
    workload: dict  # the DaemonSet or Deployment
    spec: dict
    ctr: dict
    args: list[str]
    env: dict[str, dict]
    toml: dict[str, Any] | None
    toml_text: str | None

    @property
    def kind(self) -> str:
        return str(self.workload.get("kind"))


def find_sidecars(objs: list[dict]) -> list[Sidecar]:
    found = []
    for obj in objs:
        if obj.get("kind") not in SIDECAR_KINDS:
            continue
        spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
        for ctr in spec.get("containers") or []:
            if ctr.get("name") == SIDECAR_CONTAINER:
                found.append(Sidecar(obj, spec, ctr,
                                     [str(a) for a in ctr.get("args") or []],
                                     {e.get("name"): e for e in ctr.get("env") or []},
                                     None, None))
    return found


def effective(sc: Sidecar, key: str) -> Any:
    """A setting as the sidecar resolves it: flag, then literal env, then file, then default."""
    flag = "--" + key.replace("_", "-")
    v = arg_value(sc.args, flag)
    if v is not None:
        return v
    env = sc.env.get("AFT_" + key.upper())
    if env is not None and "value" in env:
        return env["value"]
    if sc.toml is not None and key in sc.toml:
        return sc.toml[key]
    if key == "metrics_addr":
        # The binary binds its node address when no address is given.
        node = effective(sc, "node_address") or "127.0.0.1"
        return f"{node}:9464"
    if key == "node_address" and "AFT_NODE_ADDRESS" in sc.env:
        return "$(AFT_NODE_ADDRESS)"
    return DEFAULTS.get(key)


def effective_bool(sc: Sidecar, key: str) -> bool:
    """A boolean setting: on if any source turns it on (a bare flag takes no value)."""
    flag = "--" + key.replace("_", "-")
    if any(a == flag or a.startswith(flag + "=") for a in sc.args):
        return True
    env = sc.env.get("AFT_" + key.upper())
    if env is not None and str(env.get("value", "")).strip() == "true":
        return True
    return bool(sc.toml is not None and sc.toml.get(key) is True)


def under(path: str, mount: str) -> bool:
    """Whether `path` is `mount` or lies inside it."""
    path, mount = os.path.normpath(path), os.path.normpath(mount)
    return path == mount or path.startswith(mount.rstrip("/") + "/")


def port_of(addr: str) -> int | None:
    m = re.search(r":(\d+)$", str(addr))
    return int(m.group(1)) if m else None


def container_port(ctr: dict, name: str) -> int | None:
    for p in ctr.get("ports") or []:
        if p.get("name") == name:
            return p.get("containerPort")
    return None


def check_sidecar(objs: list[dict], docs: ConfigDocs, out: Findings, where: str,
                  require_storage: bool) -> list[Sidecar]:
    sidecars = find_sidecars(objs)
    if not sidecars:
        out.error(where, f"no {' or '.join(SIDECAR_KINDS)} with a container named "
                         f"{SIDECAR_CONTAINER}")
        return []
    by_kind_name = {(o.get("kind"), (o.get("metadata") or {}).get("name")): o for o in objs}
    for sc in sidecars:
        name = kn(sc.workload)
        ctr = sc.ctr
        tpl_meta = ((sc.workload.get("spec") or {}).get("template") or {}).get("metadata") or {}
        pod_labels = tpl_meta.get("labels") or {}
        annotations = tpl_meta.get("annotations") or {}

        # --- flags and environment documented -----------------------------
        for arg in list(ctr.get("command") or []) + sc.args:
            for flag in FLAG.findall(arg.split("=", 1)[0]):
                if flag not in docs.flags | docs.planned_flags:
                    out.error(where, f"{name}: flag {flag} is not documented in docs/CONFIG.md")
        for ename in sc.env:
            if ename.startswith("AFT_") and ename not in docs.envs | docs.planned_envs:
                out.error(where, f"{name}: env {ename} is no documented AFT_* setting")
        if ctr.get("command"):
            out.error(where, f"{name}: set args, not command (the image's entrypoint is the sidecar)")

        # --- storage URL: never on the command line, never a literal password
        secret_vars = {n for n, e in sc.env.items()
                       if ((e.get("valueFrom") or {}).get("secretKeyRef"))}
        if arg_value(sc.args, "--storage") is not None or "--storage" in sc.args:
            out.error(where, f"{name}: --storage on the command line (use AFT_STORAGE from a Secret)")
        for arg in sc.args:
            if re.search(r"://[^/\s]*@", arg):
                out.error(where, f"{name}: argument `{arg}` carries credentials")
        storage_env = sc.env.get("AFT_STORAGE")
        if storage_env is not None:
            if "value" in storage_env:
                if has_literal_password(str(storage_env["value"]), secret_vars):
                    out.error(where, f"{name}: AFT_STORAGE holds a literal password "
                                     "(take it from a Secret)")
            elif not (storage_env.get("valueFrom") or {}).get("secretKeyRef"):
                out.error(where, f"{name}: AFT_STORAGE must come from a Secret (secretKeyRef)")

        # --- the TOML configuration file -----------------------------------
        config_path = arg_value(sc.args, "--config")
        if config_path is None and "AFT_CONFIG" in sc.env:
            config_path = sc.env["AFT_CONFIG"].get("value")
        if config_path is None:
            out.error(where, f"{name}: no --config file")
        else:
            load_toml(sc, config_path, by_kind_name, docs, out, where)
        if sc.toml is not None and "storage" in sc.toml and "@" in str(sc.toml["storage"]):
            out.error(where, f"{name}: the config file's storage URL carries credentials "
                             "(put the URL in the aft-sidecar-storage Secret instead)")
        if require_storage:
            has_env = storage_env is not None and (
                "value" in storage_env
                or not ((storage_env.get("valueFrom") or {}).get("secretKeyRef") or {})
                .get("optional"))
            has_file = sc.toml is not None and "storage" in sc.toml
            if not (has_env or has_file):
                out.error(where, f"{name}: no storage URL (AFT_STORAGE from a present "
                                 "Secret, or `storage` in the config file)")

        # --- node address: the IP the sidecar is reachable at ----------------
        node = sc.env.get("AFT_NODE_ADDRESS")
        field_path = (((node or {}).get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        want = "status.hostIP" if sc.spec.get("hostNetwork") else "status.podIP"
        if sc.kind == "Deployment" and sc.spec.get("hostNetwork"):
            out.error(where, f"{name}: a Deployment's sidecars must not use the host network "
                             "(two replicas on one node would collide on their ports; "
                             "transaction ids name the pod IP)")
            want = "status.podIP"
        if arg_value(sc.args, "--node-address") is not None:
            out.error(where, f"{name}: set the node address with AFT_NODE_ADDRESS from the "
                             "downward API, not --node-address")
        elif field_path != want:
            out.error(where, f"{name}: AFT_NODE_ADDRESS must come from {want} "
                             f"(hostNetwork: {bool(sc.spec.get('hostNetwork'))}), not {field_path}")

        # --- metrics endpoint, probes, scrape annotations ------------------
        metrics_addr = str(effective(sc, "metrics_addr"))
        mport = port_of(metrics_addr)
        host = metrics_addr.rsplit(":", 1)[0]
        if host in LOOPBACK_HOSTS or metrics_addr == "off":
            out.error(where, f"{name}: metrics_addr `{metrics_addr}` is not reachable by "
                             "the kubelet's probes (use 0.0.0.0:9464)")
        cport = container_port(ctr, "metrics")
        if cport is None or cport != mport:
            out.error(where, f"{name}: containerPort `metrics` ({cport}) differs from "
                             f"metrics_addr `{metrics_addr}`")
        for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health"),
                            ("startupProbe", "/health")):
            p = ctr.get(probe)
            if p is None:  # a missing readiness/liveness probe is reported above
                continue
            get = p.get("httpGet") or {}
            if get.get("path") != path or get.get("port") not in ("metrics", mport):
                out.error(where, f"{name}: {probe} must be httpGet {path} on the metrics port")
        ready = ctr.get("readinessProbe") or {}
        timeout_ms = int(effective(sc, "storage_timeout_ms"))
        if int(ready.get("timeoutSeconds", 1)) * 1000 <= timeout_ms:
            out.error(where, f"{name}: readinessProbe.timeoutSeconds must exceed "
                             f"storage_timeout_ms ({timeout_ms} ms): /ready pings storage")
        if annotations.get("prometheus.io/scrape") != "true" or \
                str(annotations.get("prometheus.io/port")) != str(mport) or \
                annotations.get("prometheus.io/path", "/metrics") != "/metrics":
            out.error(where, f"{name}: prometheus.io/scrape|port|path annotations must "
                             f"point at /metrics on port {mport}")

        # --- shutdown ----------------------------------------------------------
        grace = int(effective(sc, "shutdown_grace_secs"))
        tgps = int(sc.spec.get("terminationGracePeriodSeconds", 30))
        if tgps < grace + 5:
            out.error(where, f"{name}: terminationGracePeriodSeconds ({tgps}) must be at "
                             f"least shutdown_grace_secs + 5 ({grace + 5})")

        # --- IPC directory -------------------------------------------------------
        if sc.kind == "DaemonSet":
            check_ipc_hostpath(sc, out, where)
        else:
            check_ipc_pod_local(sc, out, where)

        # --- peers -------------------------------------------------------------
        peer_mode = str(effective(sc, "peer_mode"))
        if peer_mode == "off":
            why = "DAGs could not span nodes" if sc.kind == "DaemonSet" else \
                "calls could not reach the replica holding their transaction"
            out.error(where, f"{name}: peer_mode is off: {why}")
        elif peer_mode == "plaintext":
            out.warn(where, f"{name}: peer_mode plaintext: peer traffic is neither "
                            "encrypted nor authenticated")
        elif peer_mode == "sealed":
            key_file = effective(sc, "peer_key_file")
            if not key_file:
                out.error(where, f"{name}: peer_mode sealed without peer_key_file")
            else:
                check_secret_file(sc, str(key_file), by_kind_name, out, where)
        peer_port = int(effective(sc, "peer_port"))
        if container_port(ctr, "peer") != peer_port:
            out.error(where, f"{name}: containerPort `peer` differs from the peer port {peer_port}")
        headless = [o for o in objs if o.get("kind") == "Service"
                    and (o.get("spec") or {}).get("clusterIP") == "None"
                    and labels_match((o.get("spec") or {}).get("selector"), pod_labels)]
        if not headless:
            out.error(where, f"{name}: no headless Service selects the sidecars (peer discovery)")
        dns = effective(sc, "peer_discovery_dns")
        if peer_mode != "off" and dns is None and \
                (sc.kind == "Deployment" or effective(sc, "peers") is None):
            out.error(where, f"{name}: no peer discovery: set --peer-discovery-dns to the "
                             "headless Service" + (" (pod IPs change: a static peer list "
                                                   "goes stale)" if sc.kind == "Deployment"
                                                   else " (or peers)"))
        if dns is not None and headless and \
                dns.split(".", 1)[0] not in {(h.get("metadata") or {}).get("name") for h in headless}:
            out.error(where, f"{name}: peer_discovery_dns `{dns}` names no headless "
                             "Service of this bundle")
        for h in headless:
            ports = [p.get("port") for p in (h.get("spec") or {}).get("ports") or []]
            if peer_port not in ports:
                out.error(where, f"{kn(h)}: does not expose the peer port {peer_port}")

        # --- gRPC front ------------------------------------------------------------
        check_grpc(sc, objs, pod_labels, out, where)

        # --- rollout and disruption --------------------------------------------
        wspec = sc.workload.get("spec") or {}
        if sc.kind == "DaemonSet":
            strategy = wspec.get("updateStrategy") or {}
            surge = (strategy.get("rollingUpdate") or {}).get("maxSurge", 0)
            if surge not in (0, "0", "0%"):
                out.error(where, f"{name}: maxSurge must be 0 (two sidecars on one node "
                                 "cannot both bind the IPC sockets)")
        else:
            replicas = wspec.get("replicas", 1)
            if not isinstance(replicas, int) or replicas < 2:
                out.error(where, f"{name}: replicas must be at least 2 (got {replicas}): a "
                                 "lone replica takes every open transaction down with it, "
                                 "and each rollout or drain stops the service")
            if (wspec.get("strategy") or {}).get("type") == "Recreate":
                out.error(where, f"{name}: strategy Recreate stops every replica at once "
                                 "(use RollingUpdate)")
        if not any(o.get("kind") == "PodDisruptionBudget"
                   and labels_match((o.get("spec") or {}).get("selector"), pod_labels)
                   for o in objs):
            out.error(where, f"{name}: no PodDisruptionBudget selects the sidecars")
    return sidecars


def check_ipc_hostpath(sc: Sidecar, out: Findings, where: str) -> None:
    """DaemonSet: ipc_dir is the hostPath shared with the node's executor pods."""
    name = kn(sc.workload)
    ipc_dir = str(effective(sc, "ipc_dir"))
    volumes = {v.get("name"): v for v in sc.spec.get("volumes") or []}
    mounts = [m for m in sc.ctr.get("volumeMounts") or [] if m.get("mountPath") == ipc_dir]
    if not mounts:
        out.error(where, f"{name}: nothing is mounted at ipc_dir {ipc_dir}")
    for m in mounts:
        hp = (volumes.get(m.get("name")) or {}).get("hostPath")
        if not hp:
            out.error(where, f"{name}: ipc_dir {ipc_dir} must be a hostPath volume "
                             "(shared with the executor pods of the node)")
        elif hp.get("type") not in ("Directory", "DirectoryOrCreate"):
            out.error(where, f"{name}: the IPC hostPath must have type Directory or "
                             "DirectoryOrCreate")
        if m.get("readOnly"):
            out.error(where, f"{name}: the IPC directory is mounted read-only")


def check_ipc_pod_local(sc: Sidecar, out: Findings, where: str) -> None:
    """Deployment: no executor shares the node, so no hostPath at all; the
    sidecar still binds its IPC sockets, in a subdirectory of an emptyDir
    (the root is read-only, and an emptyDir's own root is 0777, which the
    sidecar refuses as world-writable)."""
    name = kn(sc.workload)
    volumes = {v.get("name"): v for v in sc.spec.get("volumes") or []}
    for vname, vol in volumes.items():
        if vol.get("hostPath"):
            out.error(where, f"{name}: volume {vname} is a hostPath: a Deployment's sidecars "
                             "share no IPC directory with executors (no IPC hostPath)")
    ipc_dir = str(effective(sc, "ipc_dir"))
    mounts = [m for m in sc.ctr.get("volumeMounts") or []
              if m.get("mountPath") and under(ipc_dir, m["mountPath"])]
    if not mounts:
        out.error(where, f"{name}: ipc_dir {ipc_dir} is on the read-only root filesystem: "
                         "put it in a subdirectory of an emptyDir volume")
        return
    m = max(mounts, key=lambda m: len(os.path.normpath(m["mountPath"])))
    vol = volumes.get(m.get("name")) or {}
    if "emptyDir" not in vol:
        out.error(where, f"{name}: ipc_dir {ipc_dir} must be on an emptyDir volume "
                         f"(the pod's own), not volume {m.get('name')}")
    elif m.get("readOnly"):
        out.error(where, f"{name}: the IPC directory is mounted read-only")
    elif os.path.normpath(ipc_dir) == os.path.normpath(m["mountPath"]) and \
            not effective_bool(sc, "allow_world_writable_ipc_dir"):
        out.error(where, f"{name}: ipc_dir {ipc_dir} is the root of emptyDir "
                         f"{m.get('name')}, which Kubernetes makes world-writable (0777): "
                         f"the sidecar refuses it; use a subdirectory ({m['mountPath']}/ipc)")


def check_grpc(sc: Sidecar, objs: list[dict], pod_labels: dict, out: Findings,
               where: str) -> None:
    name = kn(sc.workload)
    by_kind_name = {(o.get("kind"), (o.get("metadata") or {}).get("name")): o for o in objs}
    addr = effective(sc, "grpc_addr")
    files = {k: effective(sc, k) for k in SECRET_FILE_KEYS if k.startswith("grpc_")}
    insecure = effective_bool(sc, "grpc_insecure")
    if addr is None:
        if sc.kind == "Deployment":
            out.error(where, f"{name}: a Deployment's sidecars serve nothing without "
                             "grpc_addr (no executors share their nodes): set --grpc-addr")
        given = [k for k, v in files.items() if v] + (["grpc_insecure"] if insecure else [])
        if given:
            out.error(where, f"{name}: {', '.join(given)} set without grpc_addr (the sidecar "
                             "refuses to start)")
        if container_port(sc.ctr, "grpc") is not None:
            out.error(where, f"{name}: containerPort `grpc` but no grpc_addr")
        return
    addr = str(addr)
    gport = port_of(addr)
    host = addr.rsplit(":", 1)[0] if gport is not None else addr
    if not gport:
        out.error(where, f"{name}: grpc_addr `{addr}` must be IP:PORT with a fixed port")
    if host in LOOPBACK_HOSTS:
        out.error(where, f"{name}: grpc_addr `{addr}` is not reachable from other pods "
                         "(use 0.0.0.0:PORT or the pod IP)")
    cport = container_port(sc.ctr, "grpc")
    if cport is None or cport != gport:
        out.error(where, f"{name}: containerPort `grpc` ({cport}) differs from grpc_addr "
                         f"`{addr}`")

    # A Service that selects the sidecars and exposes the gRPC port.
    exposing = []
    for svc in objs:
        spec = svc.get("spec") or {}
        if svc.get("kind") != "Service" or not labels_match(spec.get("selector"), pod_labels):
            continue
        for port in spec.get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            if target == "grpc" or (gport is not None and str(target) == str(gport)):
                exposing.append((svc, port))
    if not exposing:
        out.error(where, f"{name}: no Service selects the sidecars and exposes the gRPC port "
                         f"{gport} (targetPort grpc): functions cannot reach it")

    # Authentication (and TLS).
    token, cert, key, client_ca = (files.get(k) for k in (
        "grpc_token_file", "grpc_tls_cert", "grpc_tls_key", "grpc_tls_client_ca"))
    tls = bool(cert and key)
    if bool(cert) != bool(key):
        out.error(where, f"{name}: grpc_tls_cert and grpc_tls_key go together")
    if client_ca and not tls:
        out.error(where, f"{name}: grpc_tls_client_ca (mutual TLS) needs grpc_tls_cert and "
                         "grpc_tls_key")
    authenticated = bool(token or client_ca)
    if authenticated and insecure:
        out.error(where, f"{name}: grpc_insecure together with a token or client CA (the "
                         "sidecar refuses the contradiction)")
    elif not authenticated and not insecure:
        out.error(where, f"{name}: the gRPC front has no authentication: grpc_token_file (a "
                         "bearer token from a Secret) or grpc_tls_client_ca (mutual TLS), or "
                         "grpc_insecure if nothing else can reach the port")
    elif insecure:
        out.warn(where, f"{name}: grpc_insecure: whoever reaches the gRPC port can read and "
                        "write every key")
    for path in files.values():
        if path:
            check_secret_file(sc, str(path), by_kind_name, out, where)

    for svc, port in exposing:
        spec = svc.get("spec") or {}
        if spec.get("publishNotReadyAddresses"):
            out.error(where, f"{kn(svc)}: publishNotReadyAddresses would send gRPC calls to "
                             "sidecars that are not ready")
        outside = spec.get("type") in ("LoadBalancer", "NodePort") or spec.get("externalIPs")
        if outside and insecure:
            out.error(where, f"{kn(svc)}: takes an unauthenticated gRPC port (grpc_insecure) "
                             f"outside the cluster ({spec.get('type') or 'externalIPs'})")
        elif outside and not tls:
            out.error(where, f"{kn(svc)}: takes the gRPC port outside the cluster "
                             f"({spec.get('type') or 'externalIPs'}) without TLS: the bearer "
                             "token would cross the network in clear text "
                             "(add components/grpc-tls)")


def check_secret_file(sc: Sidecar, path: str, by_kind_name: dict, out: Findings,
                      where: str) -> None:
    """`path` must be a key of a Secret mounted read-only, not world-readable."""
    name = kn(sc.workload)
    dirname, basename = os.path.split(path)
    volumes = {v.get("name"): v for v in sc.spec.get("volumes") or []}
    for m in sc.ctr.get("volumeMounts") or []:
        secret = (volumes.get(m.get("name")) or {}).get("secret")
        if not secret or m.get("mountPath") != dirname:
            continue
        if not m.get("readOnly"):
            out.error(where, f"{name}: the Secret volume holding {path} is not mounted readOnly")
        mode = secret.get("defaultMode", 0o644)
        if mode & 0o007:
            out.error(where, f"{name}: {path} is world-readable (defaultMode {mode:o})")
        obj = by_kind_name.get(("Secret", secret.get("secretName")))
        if obj is not None and basename not in (obj.get("data") or {}) | \
                (obj.get("stringData") or {}):
            out.error(where, f"{name}: Secret {secret.get('secretName')} has no key {basename}")
        return
    out.error(where, f"{name}: {path} is not a file of a mounted Secret")


def load_toml(sc: Sidecar, config_path: str, by_kind_name: dict, docs: ConfigDocs,
              out: Findings, where: str) -> None:
    name = kn(sc.workload)
    dirname, basename = os.path.split(config_path)
    volumes = {v.get("name"): v for v in sc.spec.get("volumes") or []}
    text = None
    for m in sc.ctr.get("volumeMounts") or []:
        vol = volumes.get(m.get("name")) or {}
        cm_ref = vol.get("configMap")
        if not cm_ref:
            continue
        if m.get("mountPath") == dirname and not m.get("subPath"):
            key = basename
        elif m.get("mountPath") == config_path and m.get("subPath"):
            key = m["subPath"]
        else:
            continue
        cm = by_kind_name.get(("ConfigMap", cm_ref.get("name")))
        if cm is None:
            out.error(where, f"{name}: ConfigMap {cm_ref.get('name')} (the config file) "
                             "is not in this bundle")
            return
        text = (cm.get("data") or {}).get(key)
        if text is None:
            out.error(where, f"{name}: ConfigMap {cm_ref.get('name')} has no key {key}")
            return
    if text is None:
        out.error(where, f"{name}: --config {config_path} is not a file of a mounted ConfigMap")
        return
    try:
        sc.toml = tomllib.loads(text)
        sc.toml_text = text
    except tomllib.TOMLDecodeError as e:
        out.error(where, f"{name}: the config file is not valid TOML: {e}")
        return
    for key in sc.toml:
        if key not in docs.toml_keys:
            hint = " (documented as planned: not in the binary yet)" \
                if key in docs.planned_toml_keys else ""
            out.error(where, f"{name}: config key `{key}` is not in docs/CONFIG.md's "
                             f"reference table{hint}")


# --------------------------------------------------------------------------
# the real binary


@functools.lru_cache(maxsize=None)
def help_flags(binary: str) -> frozenset[str]:
    text = subprocess.run([binary, "--help"], capture_output=True, text=True,
                          check=True, timeout=30).stdout
    return frozenset(FLAG.findall(text))


@functools.lru_cache(maxsize=None)
def stand_in_file(binary: str, key: str) -> str:
    """A stand-in for the secret file setting `key` names (the real one is a
    mounted Secret): a fresh peer key, a token, or PEM-shaped text (the TLS
    files are only read while the settings resolve; they are parsed later,
    after the storage URL this check makes fail)."""
    if key == "peer_key_file":
        proc = subprocess.run([binary, "--generate-peer-key"], capture_output=True,
                              text=True, timeout=30)
        text = proc.stdout if proc.returncode == 0 else "0" * 64 + "\n"
    elif key == "grpc_token_file":
        text = "# stand-in token\n" + "stand-in-token-" + "0" * 32 + "\n"
    else:
        text = "-----BEGIN STAND-IN-----\nAAAA\n-----END STAND-IN-----\n"
    fd, path = tempfile.mkstemp(suffix="." + key)
    atexit.register(os.unlink, path)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def expand(value: str, env: dict[str, str]) -> str:
    return VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), value)


def check_with_binary(binary: str, sidecars: list[Sidecar], docs: ConfigDocs,
                      out: Findings, where: str) -> None:
    """Runs the binary with the pod's args, literal env and config file.

    Settings resolve first (exit 2 on any configuration error: unknown flag,
    bad value, bad config file); then the storage URL is opened, which this
    check makes fail on purpose (exit 1). So exit 1, naming the check's
    storage URL, means: the sidecar accepts this configuration.
    """
    flags = help_flags(binary)
    for sc in sidecars:
        name = kn(sc.workload)
        for arg in sc.args:
            for flag in FLAG.findall(arg.split("=", 1)[0]):
                if flag in flags:
                    continue
                if flag in docs.planned_flags:
                    out.warn(where, f"{name}: {flag} is planned but not in {binary} yet; "
                                    "this binary would refuse these args")
                else:
                    out.error(where, f"{name}: {binary} has no flag {flag}")
        if sc.toml_text is None:
            continue
        # The pod's environment as the kubelet would build it; downward-API
        # and Secret values get stand-ins.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AFT_")}
        pod_env: dict[str, str] = {}
        for ename, entry in sc.env.items():
            if "value" in entry:
                pod_env[ename] = expand(str(entry["value"]), pod_env)
            else:
                field_path = ((entry.get("valueFrom") or {}).get("fieldRef") or {}) \
                    .get("fieldPath", "")
                if field_path.startswith("status.") and field_path.endswith("IP"):
                    pod_env[ename] = "127.0.0.1"
                elif field_path == "metadata.namespace":
                    pod_env[ename] = "aft"
                else:
                    pod_env[ename] = "stand-in"
        for key in SECRET_FILE_KEYS:
            if "AFT_" + key.upper() in pod_env:
                pod_env["AFT_" + key.upper()] = stand_in_file(binary, key)
        env.update({k: v for k, v in pod_env.items()})
        with tempfile.TemporaryDirectory() as tmp:
            config = os.path.join(tmp, "config.toml")
            text = sc.toml_text
            for key in SECRET_FILE_KEYS:
                if sc.toml.get(key):
                    text = re.sub(rf"(?m)^{key}\s*=.*$",
                                  f'{key} = "{stand_in_file(binary, key)}"', text)
            with open(config, "w") as f:
                f.write(text)
            secret_flags = {"--" + k.replace("_", "-"): k for k in SECRET_FILE_KEYS}
            argv = [binary]
            skip = False
            for arg in sc.args:
                if skip:
                    skip = False
                    continue
                flag = arg.split("=", 1)[0]
                if flag in ("--config", "--storage", "--metrics-addr"):
                    skip = "=" not in arg
                    continue
                if flag in secret_flags:
                    skip = "=" not in arg
                    argv.append(f"{flag}={stand_in_file(binary, secret_flags[flag])}")
                    continue
                argv.append(expand(arg, pod_env))
            argv += ["--config", config, "--storage", "invalid-for-config-check://",
                     "--metrics-addr", "off"]
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, env=env,
                                      timeout=30, cwd=tmp)
            except subprocess.TimeoutExpired:
                out.error(where, f"{name}: {binary} did not exit on the config check")
                continue
            if proc.returncode != 1 or "invalid-for-config-check" not in proc.stderr:
                out.error(where, f"{name}: {binary} rejects this configuration "
                                 f"(exit {proc.returncode}): {proc.stderr.strip()}")


# --------------------------------------------------------------------------
# driver


def load_bundle(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def check_bundle(objs: list[dict], where: str, args: argparse.Namespace,
                 docs: ConfigDocs, versions: list[str] | None = None) -> Findings:
    out = Findings()
    check_schema(objs, versions or args.k8s_version, out, where)
    check_pod_templates(objs, out, where)
    check_selectors(objs, out, where)
    sidecars = check_sidecar(objs, docs, out, where, args.require_storage)
    if args.binary and sidecars:
        check_with_binary(args.binary, sidecars, docs, out, where)
    return out


def find(objs: list[dict], kind: str, name: str | None = None) -> dict:
    for o in objs:
        if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name):
            return o
    raise KeyError(f"{kind}/{name}")


def sidecar_ctr(objs: list[dict]) -> dict:
    ds = find(objs, "DaemonSet", "aft-sidecar")
    return next(c for c in ds["spec"]["template"]["spec"]["containers"]
                if c["name"] == SIDECAR_CONTAINER)


def set_toml(objs: list[dict], extra: str) -> None:
    cm = next(o for o in objs if o.get("kind") == "ConfigMap"
              and o["metadata"]["name"].startswith("aft-sidecar-config"))
    cm["data"]["config.toml"] += "\n" + extra + "\n"


def replace_toml(objs: list[dict], key: str, value: str) -> None:
    cm = next(o for o in objs if o.get("kind") == "ConfigMap"
              and o["metadata"]["name"].startswith("aft-sidecar-config"))
    text = cm["data"]["config.toml"]
    cm["data"]["config.toml"] = re.sub(rf"(?m)^{key}\s*=.*$", f"{key} = {value}", text)


def set_env(ctr: dict, name: str, **entry: Any) -> None:
    """Sets env `name` of a container to exactly `entry` (keeping its position)."""
    for env in ctr.setdefault("env", []):
        if env.get("name") == name:
            env.clear()
            env.update({"name": name, **entry})
            return
    ctr["env"].append({"name": name, **entry})


def set_arg(ctr: dict, flag: str, value: str) -> None:
    """Replaces `--flag=...` in a container's args (or appends it)."""
    args = ctr.setdefault("args", [])
    args[:] = [a for a in args if a.split("=", 1)[0] != flag] + [f"{flag}={value}"]


def remove_arg(ctr: dict, flag: str) -> None:
    ctr["args"] = [a for a in ctr.get("args") or [] if a.split("=", 1)[0] != flag]


def remove_toml(objs: list[dict], key: str) -> None:
    cm = next(o for o in objs if o.get("kind") == "ConfigMap"
              and o["metadata"]["name"].startswith("aft-sidecar-config"))
    cm["data"]["config.toml"] = re.sub(rf"(?m)^{key}\s*=.*$", "", cm["data"]["config.toml"])


def replace_volume(objs: list[dict], name: str, volume: dict,
                   workload: tuple[str, str] = ("DaemonSet", "aft-sidecar")) -> None:
    vols = find(objs, *workload)["spec"]["template"]["spec"]["volumes"]
    vols[:] = [volume if v.get("name") == name else v for v in vols]


GRPC_WORKLOAD = ("Deployment", "aft-sidecar-grpc")


def grpc_pod(objs: list[dict]) -> dict:
    return find(objs, *GRPC_WORKLOAD)["spec"]["template"]["spec"]


def grpc_ctr(objs: list[dict]) -> dict:
    return next(c for c in grpc_pod(objs)["containers"] if c["name"] == SIDECAR_CONTAINER)


def grpc_svc(objs: list[dict]) -> dict:
    return find(objs, "Service", "aft-sidecar-grpc")


def grpc_volume(objs: list[dict], name: str) -> dict:
    return next(v for v in grpc_pod(objs)["volumes"] if v["name"] == name)


# (description, expected substring of an error, mutation)
BREAKAGES: list[tuple[str, str, Callable[[list[dict]], None]]] = [
    ("container port is a string", "does not validate",
     lambda o: sidecar_ctr(o)["ports"][0].__setitem__("containerPort", "abc")),
    ("misspelled field (strict schema)", "does not validate",
     lambda o: sidecar_ctr(o).__setitem__("imagePullPolcy", "Always")),
    ("unknown kind", "Couldn't find schema",
     lambda o: find(o, "PodDisruptionBudget").__setitem__("kind", "PodDisruptionBudgett")),
    ("storage URL with password on the command line", "--storage on the command line",
     lambda o: sidecar_ctr(o)["args"].append("--storage=redis://:hunter2@redis:6379")),
    ("literal password in AFT_STORAGE", "literal password",
     lambda o: set_env(sidecar_ctr(o), "AFT_STORAGE", value="redis://:hunter2@redis:6379")),
    ("grace period shorter than the drain", "terminationGracePeriodSeconds",
     lambda o: find(o, "DaemonSet")["spec"]["template"]["spec"].__setitem__(
         "terminationGracePeriodSeconds", 10)),
    ("no readiness probe", "no readinessProbe",
     lambda o: sidecar_ctr(o).pop("readinessProbe")),
    ("readiness on /health", "readinessProbe must be httpGet /ready",
     lambda o: sidecar_ctr(o)["readinessProbe"]["httpGet"].__setitem__("path", "/health")),
    ("runs as root", "must run as non-root",
     lambda o: sidecar_ctr(o)["securityContext"].update({"runAsUser": 0})),
    ("writable root filesystem", "readOnlyRootFilesystem",
     lambda o: sidecar_ctr(o)["securityContext"].__setitem__("readOnlyRootFilesystem", False)),
    ("no memory limit", "resources.limits.memory",
     lambda o: sidecar_ctr(o)["resources"]["limits"].pop("memory")),
    ("unknown config key", "not in docs/CONFIG.md",
     lambda o: set_toml(o, "no_such_setting = 1")),
    ("metrics on loopback", "not reachable",
     lambda o: set_arg(sidecar_ctr(o), "--metrics-addr", "127.0.0.1:9464")),
    ("pod IP as node address on the host network", "must come from status.hostIP",
     lambda o: set_env(sidecar_ctr(o), "AFT_NODE_ADDRESS",
                       valueFrom={"fieldRef": {"fieldPath": "status.podIP"}})),
    ("peer layer off", "peer_mode is off",
     lambda o: set_env(sidecar_ctr(o), "AFT_PEER_MODE", value="off")),
    ("scrape annotation on the wrong port", "prometheus.io",
     lambda o: find(o, "DaemonSet")["spec"]["template"]["metadata"]["annotations"].__setitem__(
         "prometheus.io/port", "9999")),
    ("missing Secret", "not in this bundle",
     lambda o: sidecar_ctr(o)["env"].append(
         {"name": "X_TOKEN", "valueFrom": {"secretKeyRef": {"name": "missing", "key": "k"}}})),
    ("$(VAR) used before it is defined", "not defined before it",
     lambda o: sidecar_ctr(o)["env"].insert(0, {"name": "X_URL", "value": "$(POD_NAMESPACE)"})),
    ("both value and valueFrom", "both value and valueFrom",
     lambda o: sidecar_ctr(o)["env"][-1].__setitem__("value", "x")),
    ("no PodDisruptionBudget", "no PodDisruptionBudget",
     lambda o: o.remove(find(o, "PodDisruptionBudget"))),
    ("no headless Service", "no headless Service",
     lambda o: o.remove(find(o, "Service", "aft-sidecar-peers"))),
    ("surge rollout", "maxSurge",
     lambda o: find(o, "DaemonSet")["spec"]["updateStrategy"]["rollingUpdate"].__setitem__(
         "maxSurge", 1)),
    ("IPC directory not a hostPath", "hostPath",
     lambda o: replace_volume(o, "ipc", {"name": "ipc", "emptyDir": {}})),
    ("undocumented flag", "not documented",
     lambda o: sidecar_ctr(o)["args"].append("--no-such-flag=1")),
    ("image without tag", "has no tag",
     lambda o: sidecar_ctr(o).__setitem__("image", "aft-sidecar")),
]

# Breakages only the real binary notices (run with --binary).
BINARY_BREAKAGES: list[tuple[str, str, Callable[[list[dict]], None]]] = [
    ("config value the binary refuses", "rejects this configuration",
     lambda o: replace_toml(o, "log_format", '"bogus"')),
    ("config value of the wrong type", "rejects this configuration",
     lambda o: replace_toml(o, "cache_bytes", '"256MiB"')),
    ("peer settings with the peer layer off", "rejects this configuration",
     lambda o: replace_toml(o, "peer_mode", '"off"')),
    ("flag the binary does not have", "has no flag",
     lambda o: sidecar_ctr(o)["args"].append("--peer-port-typo=1")),
]


# Breakages of a Deployment-mode rendering (overlays/grpc): the gRPC front,
# and the rules that differ from the DaemonSet's.
GRPC_BREAKAGES: list[tuple[str, str, Callable[[list[dict]], None]]] = [
    ("gRPC port missing from the Service", "exposes the gRPC port",
     lambda o: grpc_svc(o)["spec"]["ports"][0].update(
         {"name": "metrics", "port": 9464, "targetPort": "metrics"})),
    ("no gRPC Service", "exposes the gRPC port",
     lambda o: o.remove(grpc_svc(o))),
    ("gRPC Service selects no pod", "selects no pod template",
     lambda o: grpc_svc(o)["spec"]["selector"].__setitem__(
         "app.kubernetes.io/component", "grcp")),
    ("gRPC Service publishes not-ready pods", "not ready",
     lambda o: grpc_svc(o)["spec"].__setitem__("publishNotReadyAddresses", True)),
    ("no authentication", "no authentication",
     lambda o: remove_toml(o, "grpc_token_file")),
    ("insecure together with a token", "grpc_insecure together",
     lambda o: grpc_ctr(o)["args"].append("--grpc-insecure")),
    ("token file not from a Secret", "not a file of a mounted Secret",
     lambda o: replace_toml(o, "grpc_token_file", '"/etc/aft/grpc.token"')),
    ("token file not in the Secret", "has no key",
     lambda o: replace_toml(o, "grpc_token_file", '"/etc/aft-grpc/token"')),
    ("token Secret world-readable", "world-readable",
     lambda o: grpc_volume(o, "grpc-token")["secret"].__setitem__("defaultMode", 0o444)),
    ("TLS certificate without key", "go together",
     lambda o: set_env(grpc_ctr(o), "AFT_GRPC_TLS_CERT", value="/etc/aft-grpc/grpc.token")),
    ("LoadBalancer without TLS", "clear text",
     lambda o: grpc_svc(o)["spec"].__setitem__("type", "LoadBalancer")),
    ("gRPC container port differs from grpc_addr", "differs from grpc_addr",
     lambda o: grpc_ctr(o)["ports"][0].__setitem__("containerPort", 50052)),
    ("gRPC on loopback", "not reachable from other pods",
     lambda o: set_arg(grpc_ctr(o), "--grpc-addr", "127.0.0.1:50051")),
    ("no gRPC address", "serve nothing without grpc_addr",
     lambda o: remove_arg(grpc_ctr(o), "--grpc-addr")),
    ("node address from the host IP", "must come from status.podIP",
     lambda o: set_env(grpc_ctr(o), "AFT_NODE_ADDRESS",
                       valueFrom={"fieldRef": {"fieldPath": "status.hostIP"}})),
    ("host network", "must not use the host network",
     lambda o: grpc_pod(o).__setitem__("hostNetwork", True)),
    ("one replica", "replicas must be at least 2",
     lambda o: find(o, *GRPC_WORKLOAD)["spec"].__setitem__("replicas", 1)),
    ("Recreate strategy", "Recreate",
     lambda o: find(o, *GRPC_WORKLOAD)["spec"].__setitem__("strategy", {"type": "Recreate"})),
    ("IPC hostPath", "is a hostPath",
     lambda o: replace_volume(o, "ipc", {"name": "ipc", "hostPath": {
         "path": "/var/run/aft/requests", "type": "DirectoryOrCreate"}}, GRPC_WORKLOAD)),
    ("ipc_dir at an emptyDir's root", "world-writable",
     lambda o: replace_toml(o, "ipc_dir", '"/run/aft"')),
    ("ipc_dir on the read-only root filesystem", "read-only root filesystem",
     lambda o: replace_toml(o, "ipc_dir", '"/var/run/aft-ipc"')),
    ("peer layer off", "peer_mode is off",
     lambda o: set_env(grpc_ctr(o), "AFT_PEER_MODE", value="off")),
    ("no peer discovery", "no peer discovery",
     lambda o: remove_arg(grpc_ctr(o), "--peer-discovery-dns")),
    ("no headless Service", "no headless Service",
     lambda o: o.remove(find(o, "Service", "aft-sidecar-peers"))),
    ("no PodDisruptionBudget", "no PodDisruptionBudget",
     lambda o: o.remove(find(o, "PodDisruptionBudget"))),
    ("grace period shorter than the drain", "terminationGracePeriodSeconds",
     lambda o: grpc_pod(o).__setitem__("terminationGracePeriodSeconds", 10)),
    ("readiness on /health", "readinessProbe must be httpGet /ready",
     lambda o: grpc_ctr(o)["readinessProbe"]["httpGet"].__setitem__("path", "/health")),
    ("runs as root", "must run as non-root",
     lambda o: grpc_ctr(o)["securityContext"].update({"runAsUser": 0})),
]

GRPC_BINARY_BREAKAGES: list[tuple[str, str, Callable[[list[dict]], None]]] = [
    ("no authentication, as the binary sees it", "rejects this configuration",
     lambda o: remove_toml(o, "grpc_token_file")),
    ("gRPC address without a port, as the binary sees it", "rejects this configuration",
     lambda o: set_arg(grpc_ctr(o), "--grpc-addr", "0.0.0.0")),
    ("gRPC settings without an address, as the binary sees it", "rejects this configuration",
     lambda o: remove_arg(grpc_ctr(o), "--grpc-addr")),
]


def self_test(path: str, args: argparse.Namespace, docs: ConfigDocs) -> int:
    good = load_bundle(path)
    # The breakages that fit the bundle's shape: a DaemonSet or a Deployment.
    grpc_shape = any(sc.kind == "Deployment" for sc in find_sidecars(good))
    # One Kubernetes version is enough to show each breakage is caught.
    versions = args.k8s_version[-1:]
    base = check_bundle(copy.deepcopy(good), path, args, docs, versions)
    if base.errors:
        print(f"SELF-TEST {path}: the unbroken bundle already fails:")
        for e in base.errors:
            print(f"  {e}")
        return 1
    failed = 0
    if grpc_shape:
        breakages = GRPC_BREAKAGES + (GRPC_BINARY_BREAKAGES if args.binary else [])
    else:
        breakages = BREAKAGES + (BINARY_BREAKAGES if args.binary else [])
    for description, expected, mutate in breakages:
        objs = copy.deepcopy(good)
        mutate(objs)
        found = check_bundle(objs, f"{path} [{description}]", args, docs, versions)
        if any(expected in e for e in found.errors):
            if not args.quiet:
                print(f"ok   caught: {description}")
        else:
            failed += 1
            print(f"FAIL not caught: {description} (expected an error containing "
                  f"{expected!r}; got {found.errors or 'no errors'})")
    shape = "Deployment (gRPC)" if grpc_shape else "DaemonSet"
    print(f"self-test ({shape}): {len(breakages) - failed} of {len(breakages)} deliberate "
          f"breakages caught{'' if args.binary else ' (binary checks skipped: no --binary)'}")
    return 1 if failed else 0


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", help="rendered manifest bundles")
    parser.add_argument("--k8s-version", action="append",
                        help="Kubernetes version to validate against (repeatable; "
                             "default 1.28 and 1.37)")
    parser.add_argument("--docs", default=os.path.join(os.path.dirname(__file__),
                                                       "..", "docs", "CONFIG.md"))
    parser.add_argument("--binary", help="aft-sidecar binary to check flags and config with")
    parser.add_argument("--require-storage", action="store_true",
                        help="the bundle must configure a storage URL (overlays)")
    parser.add_argument("--self-test", metavar="FILE",
                        help="break FILE in known ways; fail unless each is reported")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(list(argv) if argv is not None else None)
    args.k8s_version = args.k8s_version or ["1.28", "1.37"]
    docs = parse_config_docs(args.docs)
    if args.binary:
        args.binary = os.path.abspath(args.binary)

    if args.self_test:
        return self_test(args.self_test, args, docs)

    rc = 0
    for path in args.files:
        try:
            objs = load_bundle(path)
        except yaml.YAMLError as e:
            print(f"ERROR {path}: not YAML: {e}")
            rc = 1
            continue
        found = check_bundle(objs, path, args, docs)
        for w in found.warnings:
            print(f"WARN  {w}")
        for e in found.errors:
            print(f"ERROR {e}")
        if found.errors:
            rc = 1
        elif not args.quiet:
            print(f"ok    {path}: {len(objs)} objects, Kubernetes "
                  f"{', '.join(args.k8s_version)}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
