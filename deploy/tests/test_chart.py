"""The Helm chart in deploy/helm/ebb, rendered by Helm's own engine (the Helm
Go SDK through helm-python-sdk, offline) and every manifest validated against
the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields
fail). scripts/check-deploy.sh installs the tools and runs this file."""

import pathlib

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

CHART = pathlib.Path(__file__).resolve().parents[1] / "helm" / "ebb"
# The oldest Kubernetes the chart supports, and the newest the validator knows.
KUBERNETES_VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]
# Kinds from CRDs: the validator has no schema for them; checked below from
# their vendors' documentation.
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject"), ("monitoring.coreos.com/v1", "ServiceMonitor")}

SCENARIOS = {
    "defaults": {},
    "everything-on": {"keda": {"enabled": True, "destinations": ["crm_webhook", "replica"]},
                      "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
                      "env": [{"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel:4318"}],
                      "imagePullSecrets": [{"name": "registry"}]},
    "single-planner": {"planner": {"replicas": 1}},
    "own-configmap": {"existingConfigMap": "my-ebb-config", "image": {"tag": "1.2.3"}},
    "no-pdbs": {"planner": {"podDisruptionBudget": {"enabled": False}},
                "worker": {"podDisruptionBudget": {"enabled": False}}},
}


def render(values, name="ebb"):
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values, name=name, namespace="data")
    objects = []
    for path, text in files.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects


def by_kind(objects, kind, name=None):
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    return found


def one(objects, kind, name):
    found = by_kind(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, got {[o['metadata']['name'] for o in by_kind(objects, kind)]}"
    return found[0]


def test_helm_lint_finds_nothing_above_info():
    result = helm.lint(str(CHART))
    assert result["errors"] == [], result
    assert result["total_charts_linted"] == 1
    # severity 1 is INFO ("icon is recommended"); 2 WARNING, 3 ERROR.
    assert [m for m in result["messages"] if m["severity"] >= 2] == [], result


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_manifest_validates(scenario, version):
    objects = render(SCENARIOS[scenario])
    assert len(objects) >= 5
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(obj, version, strict=True)


def test_defaults_render_the_expected_objects():
    objects = render({})
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    assert kinds == [
        ("ConfigMap", "ebb-config"),
        ("Deployment", "ebb-planner"),
        ("Deployment", "ebb-worker"),
        ("PodDisruptionBudget", "ebb-planner"),
        ("PodDisruptionBudget", "ebb-worker"),
        ("Service", "ebb-planner"),
        ("Service", "ebb-worker"),
    ]


def containers(deployment):
    return deployment["spec"]["template"]["spec"]["containers"]


def test_pods_run_as_non_root_with_a_read_only_root_and_no_capabilities():
    for name in ["ebb-planner", "ebb-worker"]:
        spec = one(render({}), "Deployment", name)["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["automountServiceAccountToken"] is False
        for c in spec["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


def test_both_binaries_read_the_mounted_config_and_listen_where_probes_reach():
    objects = render({})
    planner = containers(one(objects, "Deployment", "ebb-planner"))[0]
    assert planner["command"] == ["ebb", "--config", "/etc/ebb/ebb.toml", "serve", "--listen", "0.0.0.0:8080"]
    worker = containers(one(objects, "Deployment", "ebb-worker"))[0]
    assert worker["command"][:3] == ["ebb-worker", "--config", "/etc/ebb/ebb.toml"]
    assert worker["command"][worker["command"].index("--listen") + 1] == "0.0.0.0:8081"
    for c, port in [(planner, 8080), (worker, 8081)]:
        assert c["ports"] == [{"name": "http", "containerPort": port}]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert c["volumeMounts"] == [{"name": "config", "mountPath": "/etc/ebb", "readOnly": True}]
        assert c["envFrom"] == [{"secretRef": {"name": "ebb-secrets"}}]
    config = one(objects, "ConfigMap", "ebb-config")
    assert "[state]" in config["data"]["ebb.toml"]
    # Services select the pods of their own component only.
    for component in ["planner", "worker"]:
        service = one(objects, "Service", f"ebb-{component}")
        deployment = one(objects, "Deployment", f"ebb-{component}")
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        assert service["spec"]["selector"]["app.kubernetes.io/component"] == component
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()


@pytest.mark.parametrize("shutdown", [30, 120])
def test_the_grace_period_covers_the_workers_shutdown_timeout(shutdown):
    worker = one(render({"worker": {"shutdownTimeoutSeconds": shutdown}}), "Deployment", "ebb-worker")
    command = containers(worker)[0]["command"]
    passed = int(command[command.index("--shutdown-timeout-secs") + 1])
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert passed == shutdown
    assert grace == shutdown + 15


def test_a_changed_config_rolls_the_pods():
    def checksums(values):
        objects = render(values)
        return {one(objects, "Deployment", n)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
                for n in ["ebb-planner", "ebb-worker"]}
    before, after = checksums({}), checksums({"config": "[state]\ndatabase_url = \"x\"\n"})
    assert len(before) == 1 and len(after) == 1 and before != after


def test_two_planners_keep_one_through_a_drain_and_one_planner_does_not_block_it():
    two = one(render({}), "PodDisruptionBudget", "ebb-planner")["spec"]
    assert two.get("minAvailable") == 1 and "maxUnavailable" not in two
    single = one(render({"planner": {"replicas": 1}}), "PodDisruptionBudget", "ebb-planner")["spec"]
    assert single.get("maxUnavailable") == 1 and "minAvailable" not in single
    assert by_kind(render(SCENARIOS["no-pdbs"]), "PodDisruptionBudget") == []


def test_keda_scales_the_workers_on_each_destinations_active_list():
    objects = render(SCENARIOS["everything-on"])
    worker = one(objects, "Deployment", "ebb-worker")
    assert "replicas" not in worker["spec"], "KEDA owns the replica count"
    scaled = one(objects, "ScaledObject", "ebb-worker")
    # KEDA's ScaledObject spec (keda.sh/v1alpha1): scaleTargetRef.name is a
    # Deployment in the same namespace; redis triggers take address,
    # listName and listLength as strings.
    assert scaled["spec"]["scaleTargetRef"] == {"name": "ebb-worker"}
    assert scaled["spec"]["minReplicaCount"] >= 1
    assert scaled["spec"]["maxReplicaCount"] >= scaled["spec"]["minReplicaCount"]
    assert scaled["spec"]["triggers"] == [
        {"type": "redis", "metadata": {"address": "redis:6379", "listName": "{ebb:writes:crm_webhook}:active", "listLength": "50"}},
        {"type": "redis", "metadata": {"address": "redis:6379", "listName": "{ebb:writes:replica}:active", "listLength": "50"}},
    ]
    assert by_kind(render({}), "ScaledObject") == []
    assert one(render({}), "Deployment", "ebb-worker")["spec"]["replicas"] == 2
    # Zero workers would never see new tasks (see values.yaml).
    zero = one(render({"keda": {"enabled": True, "minReplicas": 0}}), "ScaledObject", "ebb-worker")
    assert zero["spec"]["minReplicaCount"] == 1


def test_the_service_monitor_scrapes_metrics_of_both_services():
    objects = render(SCENARIOS["everything-on"])
    monitor = one(objects, "ServiceMonitor", "ebb")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    # Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1): the
    # selector picks Services by label and endpoints name a Service port.
    selector = monitor["spec"]["selector"]["matchLabels"]
    for service in by_kind(objects, "Service"):
        assert selector.items() <= service["metadata"]["labels"].items()
        assert "http" in [p["name"] for p in service["spec"]["ports"]]
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    assert by_kind(render({}), "ServiceMonitor") == []


def test_an_own_configmap_replaces_the_charts():
    objects = render(SCENARIOS["own-configmap"])
    assert by_kind(objects, "ConfigMap") == []
    for name in ["ebb-planner", "ebb-worker"]:
        spec = one(objects, "Deployment", name)["spec"]["template"]["spec"]
        assert spec["volumes"] == [{"name": "config", "configMap": {"name": "my-ebb-config"}}]
        assert spec["containers"][0]["image"] == "ghcr.io/ebb-dev/ebb:1.2.3"


def test_a_missing_secret_name_is_an_error_that_says_what_to_set():
    with pytest.raises(helm.HelmError) as failure:
        render({"secrets": {"existingSecret": ""}})
    assert "secrets.existingSecret" in str(failure.value)


def test_release_names_prefix_every_object():
    for obj in render({}, name="marketing"):
        assert obj["metadata"]["name"].startswith("marketing-ebb"), obj["metadata"]["name"]
