"""The Helm chart in deploy/helm/bidfilter, rendered by Helm's own template engine.

No helm binary can be installed here (not on PyPI, Debian or npm in a usable version), so the
chart is rendered through helm-python-sdk, bindings to Helm's Go SDK: the same engine, values
merging and values.schema.json check as `helm template`. Every manifest is then checked against
the Kubernetes OpenAPI schemas bundled in kubernetes-validate, in strict mode (an unknown field
is an error), for the oldest Kubernetes the chart supports and the newest bundled. The rest pins
the wiring that a cluster would only reveal at runtime: probes, selectors, the HPA target, zone
spread, the NLB annotations and the shutdown timing.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from bidfilter import __version__
from bidfilter.settings import Settings

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "bidfilter"
RELEASE = "rtb"
NAMESPACE = "bidding"
STORE = "s3://models-bucket/bidfilter"
ROLE_ARN = "arn:aws:iam::123456789012:role/bidfilter-model-reader"
NLB = "service.beta.kubernetes.io/aws-load-balancer-"

# Chart.yaml's kubeVersion floor, and the newest release whose schemas are bundled.
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())

# Every optional branch of the templates switched on, so that they are schema-checked too.
EVERY_OPTION = {
    "imagePullSecrets": [{"name": "ecr"}],
    "extraEnv": [{"name": "AWS_REGION", "value": "us-east-1"}],
    "podLabels": {"team": "rtb"},
    "priorityClassName": "rtb-critical",
    "nodeSelector": {"kubernetes.io/arch": "amd64"},
    "tolerations": [{"key": "rtb", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "rtb", "operator": "Exists"}]}]
            }
        }
    },
    "service": {"loadBalancerSourceRanges": ["10.0.0.0/8"], "annotations": {"team": "rtb"}},
    "serviceAccount": {"annotations": {"team": "rtb"}},
}


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merged(result[key], value)
        else:
            result[key] = value
    return result


def render(overrides: dict[str, Any] | None = None, release: str = RELEASE) -> dict[str, Any]:
    """The release's manifests by kind (the chart makes at most one of each)."""
    values = _merged(
        {"config": {"store": STORE}, "serviceAccount": {"roleArn": ROLE_ARN}}, overrides or {}
    )
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name=release, namespace=NAMESPACE, is_install=True)
    manifests: dict[str, Any] = {}
    for path, text in rendered.items():
        if not path.endswith(".yaml"):
            continue  # NOTES.txt
        for document in yaml.safe_load_all(text):
            if document:
                assert document["kind"] not in manifests, f"two {document['kind']} objects"
                manifests[document["kind"]] = document
    return manifests


@pytest.fixture(scope="module")
def manifests() -> dict[str, Any]:
    return render()


def pod_spec(manifests: dict[str, Any]) -> dict[str, Any]:
    return manifests["Deployment"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def pod_labels(manifests: dict[str, Any]) -> dict[str, str]:
    return manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]  # type: ignore[no-any-return]


def container(manifests: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod_spec(manifests)["containers"]
    return only  # type: ignore[no-any-return]


def container_port(manifests: dict[str, Any], name_or_number: str | int) -> int:
    """The container port a probe or a Service targetPort designates, by name or number."""
    ports = container(manifests)["ports"]
    if isinstance(name_or_number, int):
        assert name_or_number in [p["containerPort"] for p in ports]
        return name_or_number
    (port,) = [p["containerPort"] for p in ports if p["name"] == name_or_number]
    return int(port)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


@pytest.fixture
def settings_from(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Settings as bidfilter itself reads them from a ConfigMap's BIDFILTER_* variables."""
    for name in list(os.environ):
        if name.startswith("BIDFILTER_"):
            monkeypatch.delenv(name)

    def read(config_map: dict[str, Any]) -> Settings:
        for name, value in config_map["data"].items():
            monkeypatch.setenv(name, value)
        return Settings()

    yield read


# --- the chart is valid ---------------------------------------------------------------------------


def test_chart_lints_without_warnings() -> None:
    report = helm.lint(str(CHART), {"config": {"store": STORE}}, strict=True)
    assert report["errors"] == []
    # severity 1 is INFO ("icon is recommended"); 2 and up are warnings and errors
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        EVERY_OPTION,
        {"autoscaling": {"enabled": False}, "podDisruptionBudget": {"enabled": False}},
    ],
    ids=["defaults", "every-option", "fixed-replicas"],
)
def test_manifests_match_the_kubernetes_schemas(overrides: dict[str, Any], version: str) -> None:
    manifests = render(overrides)
    assert {"ConfigMap", "Deployment", "Service", "ServiceAccount"} <= manifests.keys()
    problems = []
    for kind, manifest in manifests.items():
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            # the whole schema is in str(error); the place and the message are what matter
            where = ".".join(str(part) for part in error.absolute_path)
            problems.append(f"{kind} at {where}: {error.message}")
    assert problems == []


# --- the container listens where the probes and the load balancer look ----------------------------


@pytest.mark.parametrize("ports", [{}, {"thrift": 7000, "http": 7100}], ids=["default", "custom"])
def test_probes_and_config_agree_on_the_ports(ports: dict[str, int], settings_from: Any) -> None:
    manifests = render({"ports": ports})
    settings = settings_from(manifests["ConfigMap"])
    defaults = Settings.model_fields
    assert settings.port == ports.get("thrift", defaults["port"].default)
    assert settings.metrics_port == ports.get("http", defaults["metrics_port"].default)
    assert settings.host == "0.0.0.0"  # the pod IP, not loopback, is what gets traffic

    main = container(manifests)
    assert container_port(manifests, "thrift") == settings.port
    for probe, path in [
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
        ("startupProbe", "/healthz"),
    ]:
        check = main[probe]["httpGet"]
        assert check["path"] == path
        assert container_port(manifests, check["port"]) == settings.metrics_port

    annotations = manifests["Service"]["metadata"]["annotations"]
    assert annotations[f"{NLB}healthcheck-port"] == str(settings.metrics_port)
    (service_port,) = manifests["Service"]["spec"]["ports"]
    assert container_port(manifests, service_port["targetPort"]) == settings.port


def test_config_becomes_settings_bidfilter_reads(
    manifests: dict[str, Any], settings_from: Any
) -> None:
    data = manifests["ConfigMap"]["data"]
    # Settings ignores unknown BIDFILTER_* names, so a misspelt key would be dropped silently.
    fields = Settings.model_fields
    unknown = {name for name in data if name.removeprefix("BIDFILTER_").lower() not in fields}
    assert unknown == set()
    settings = settings_from(manifests["ConfigMap"])
    assert settings.store == STORE
    # a worker per requested CPU: inside the pod bidfilter's own default would count the node's
    assert settings.workers == int(container(manifests)["resources"]["requests"]["cpu"])
    assert settings.log_json is True
    assert settings.cache_dir == "/var/cache/bidfilter"

    (source,) = container(manifests)["envFrom"]
    assert source["configMapRef"]["name"] == manifests["ConfigMap"]["metadata"]["name"]


def test_render_refuses_config_it_cannot_serve() -> None:
    with pytest.raises(helm.HelmRenderError, match=r"config\.store is required"):
        render({"config": {"store": ""}})
    # the chart owns these: ports and probes would disagree otherwise
    with pytest.raises(helm.HelmRenderError, match=r"config\.metrics_port is set by the chart"):
        render({"config": {"metrics_port": 9200}})


@pytest.mark.parametrize(
    "overrides",
    [
        {"service": {"scheme": "public"}},
        {"serviceAccount": {"roleArn": "bidfilter-role"}},
        {"ports": {"http": "9100"}},
        {"topologySpread": {"zone": {"whenUnsatisfiable": "Sometimes"}}},
    ],
    ids=["scheme", "role-arn", "port-type", "spread-rule"],
)
def test_values_schema_refuses_malformed_values(overrides: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        render(overrides)


def test_config_change_rolls_the_pods() -> None:
    def checksum(overrides: dict[str, Any]) -> str:
        template = render(overrides)["Deployment"]["spec"]["template"]
        return str(template["metadata"]["annotations"]["checksum/config"])

    assert checksum({}) == checksum({})
    assert checksum({}) != checksum({"config": {"poll_s": 5}})


# --- selectors, autoscaling, disruption, spread ---------------------------------------------------


def test_every_selector_matches_the_pods_of_its_release_only(manifests: dict[str, Any]) -> None:
    labels = pod_labels(manifests)
    other_release = pod_labels(render(release="shadow"))
    selectors = {
        "Deployment": manifests["Deployment"]["spec"]["selector"]["matchLabels"],
        "Service": manifests["Service"]["spec"]["selector"],
        "PodDisruptionBudget": manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    }
    for constraint in pod_spec(manifests)["topologySpreadConstraints"]:
        selectors[constraint["topologyKey"]] = constraint["labelSelector"]["matchLabels"]
    for owner, selector in selectors.items():
        assert selects(selector, labels), owner
        assert not selects(selector, other_release), owner


def test_hpa_scales_the_deployment_on_cpu(manifests: dict[str, Any]) -> None:
    hpa = manifests["HorizontalPodAutoscaler"]
    deployment = manifests["Deployment"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    # Utilization is a share of the request: without one the HPA cannot compute it.
    assert container(manifests)["resources"]["requests"]["cpu"]
    # A replica count in the Deployment would undo the HPA's choice on every upgrade.
    assert "replicas" not in deployment["spec"]
    assert 1 < hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_without_autoscaling_the_deployment_sets_its_replicas() -> None:
    manifests = render({"autoscaling": {"enabled": False}, "replicaCount": 4})
    assert "HorizontalPodAutoscaler" not in manifests
    assert manifests["Deployment"]["spec"]["replicas"] == 4


def test_disruptions_and_rollouts_keep_capacity(manifests: dict[str, Any]) -> None:
    assert manifests["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    rolling = manifests["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0


def test_pods_spread_over_zones(manifests: dict[str, Any]) -> None:
    by_key = {c["topologyKey"]: c for c in pod_spec(manifests)["topologySpreadConstraints"]}
    zone = by_key["topology.kubernetes.io/zone"]
    assert zone["maxSkew"] == 1
    assert "kubernetes.io/hostname" in by_key
    strict = render({"topologySpread": {"zone": {"whenUnsatisfiable": "DoNotSchedule"}}})
    (strict_zone,) = [
        c
        for c in pod_spec(strict)["topologySpreadConstraints"]
        if c["topologyKey"] == "topology.kubernetes.io/zone"
    ]
    assert strict_zone["whenUnsatisfiable"] == "DoNotSchedule"


# --- the load balancer ----------------------------------------------------------------------------


def test_service_is_an_nlb_that_checks_readyz(manifests: dict[str, Any]) -> None:
    service = manifests["Service"]
    annotations = service["metadata"]["annotations"]
    assert service["spec"]["type"] == "LoadBalancer"
    assert annotations[f"{NLB}type"] == "external"
    assert annotations[f"{NLB}nlb-target-type"] == "ip"
    assert annotations[f"{NLB}scheme"] == "internal"
    assert annotations[f"{NLB}healthcheck-protocol"] == "HTTP"
    assert annotations[f"{NLB}healthcheck-path"] == "/readyz"
    # The side port serves /metrics: it is checked by the NLB on the pod IP, never exposed by it.
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["thrift"]


def test_service_annotations_follow_values() -> None:
    overrides = {
        "service": {
            "scheme": "internet-facing",
            "annotations": {f"{NLB}healthcheck-interval": "5", "team": "rtb"},
        }
    }
    annotations = render(overrides)["Service"]["metadata"]["annotations"]
    assert annotations[f"{NLB}scheme"] == "internet-facing"
    assert annotations[f"{NLB}healthcheck-interval"] == "5"
    assert annotations["team"] == "rtb"
    assert annotations[f"{NLB}healthcheck-path"] == "/readyz"


# --- shutdown -------------------------------------------------------------------------------------


def test_grace_period_covers_the_prestop_sleep_and_the_drain(
    manifests: dict[str, Any], settings_from: Any
) -> None:
    drain_s = settings_from(manifests["ConfigMap"]).drain_s
    assert drain_s == Settings.model_fields["drain_s"].default
    command = container(manifests)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop_s = float(command[1])
    grace_s = pod_spec(manifests)["terminationGracePeriodSeconds"]
    assert grace_s > pre_stop_s + drain_s
    # The NLB must not cut connections before the drain has closed them.
    attributes = manifests["Service"]["metadata"]["annotations"][f"{NLB}target-group-attributes"]
    delay = dict(pair.split("=") for pair in attributes.split(","))
    assert float(delay["deregistration_delay.timeout_seconds"]) >= pre_stop_s + drain_s


@pytest.mark.parametrize(
    "overrides",
    [
        {"shutdown": {"preStopSleepSeconds": 15, "terminationGracePeriodSeconds": 25}},
        {"config": {"drain_s": 30}},
        {"config": {"drain_s": None}, "shutdown": {"terminationGracePeriodSeconds": 20}},
    ],
    ids=["equal", "longer-drain", "default-drain"],
)
def test_render_refuses_a_grace_period_too_short_to_drain(overrides: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmRenderError, match="terminationGracePeriodSeconds"):
        render(overrides)


# --- security and identity ------------------------------------------------------------------------


def test_pods_run_as_non_root_on_a_read_only_root(
    manifests: dict[str, Any], settings_from: Any
) -> None:
    pod = pod_spec(manifests)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    main = container(manifests)
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert main["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # The root is read-only: every place written to is an emptyDir, the model cache among them.
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    assert set(mounts.values()) <= empty_dirs
    assert settings_from(manifests["ConfigMap"]).cache_dir in mounts
    assert "/tmp" in mounts


def test_irsa_role_annotates_the_pods_service_account(manifests: dict[str, Any]) -> None:
    account = manifests["ServiceAccount"]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == ROLE_ARN
    assert pod_spec(manifests)["serviceAccountName"] == account["metadata"]["name"]
    without_role = render({"serviceAccount": {"roleArn": ""}})["ServiceAccount"]
    assert "eks.amazonaws.com/role-arn" not in without_role["metadata"].get("annotations", {})


def test_image_defaults_to_the_package_version(manifests: dict[str, Any]) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    assert container(manifests)["image"] == f"bidfilter:{__version__}"
    pinned = render({"image": {"repository": "123.dkr.ecr.us-east-1.amazonaws.com/bf", "tag": "x"}})
    assert container(pinned)["image"] == "123.dkr.ecr.us-east-1.amazonaws.com/bf:x"
