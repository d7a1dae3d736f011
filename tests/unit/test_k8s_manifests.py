"""The Kubernetes manifests (deploy/k8s): rendered as `kubectl apply -k` renders them, every object
validated against the API schemas of a pinned Kubernetes version (strict: an unknown or misspelt
field fails, as the API server's strict field validation would), the KEDA ScaledObject against a
schema of the fields it uses from KEDA's ScaledObject and Kafka scaler spec. Then what no schema
knows: every stage has a workload with probes and requests, every name one object uses another
defines, the settings the stages read exist, and the autoscaler watches the group and topic the
generate stage really uses.

kubernetes-validate ships the schemas, so this runs offline; the dev extra installs it.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml
from kubernetes_validate.utils import ValidationError

from processors.config import RegistrySettings, Settings
from processors.kafka_clients import consumer_config, group_id_for
from processors.topology import STAGE_NAMES, STAGES, stage_spec
from schemas.topics import Topic, TopicNames

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
PLAIN = K8S  # `kubectl apply -k deploy/k8s`: no custom resources, any cluster
KEDA = K8S / "keda"  # `kubectl apply -k deploy/k8s/keda`: the same plus the ScaledObject

# The Kubernetes release the manifests are checked against: an older minor on purpose (past
# upstream support by the end of 2026, still offered by the managed clouds), so the manifests do
# not lean on fields only newer clusters know. Raising it is a decision: read its removals first.
K8S_VERSION = "1.34.0"

# Kinds without a namespace (kustomize's `namespace:` leaves them alone).
CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"})
POD_TEMPLATE_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job"})


# -- rendering: the part of kustomize these manifests use -----------------------------------------

# A kustomization using anything else fails here rather than being rendered wrongly.
KUSTOMIZATION_KEYS = frozenset({"apiVersion", "kind", "namespace", "resources", "images", "patches"})


def _pointer(path: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in path.lstrip("/").split("/")]


def _json6902(doc: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    for op in ops:
        *parents, last = _pointer(op["path"])
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if op["op"] == "remove":
            del node[int(last) if isinstance(node, list) else last]
        elif op["op"] in {"add", "replace"}:
            if op["op"] == "replace":
                assert last in node, f"replace of a missing {op['path']}"
            node[last] = op["value"]
        else:
            raise AssertionError(f"patch op {op['op']!r} is not rendered by this test")


def _matches(target: dict[str, Any], doc: dict[str, Any]) -> bool:
    group, _, version = doc["apiVersion"].rpartition("/")
    wanted = {"group": group, "version": version, "kind": doc["kind"], "name": doc["metadata"]["name"]}
    return all(wanted[key] == value for key, value in target.items())


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] not in POD_TEMPLATE_KINDS:
        return []
    pod = doc["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def render(folder: Path) -> list[dict[str, Any]]:
    """What `kubectl kustomize folder` prints, for the features KUSTOMIZATION_KEYS allows: each
    level renders its resources, then applies its patches, namespace and images."""
    folder = folder.resolve()
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZATION_KEYS
    assert not unknown, f"{folder}/kustomization.yaml uses {sorted(unknown)}; teach render() first"
    docs: list[dict[str, Any]] = []
    for entry in kustomization["resources"]:
        path = (folder / entry).resolve()
        assert path.is_relative_to(folder) or (path / "kustomization.yaml").exists(), (
            f"{entry}: kustomize loads files only from inside {folder}"
        )
        if path.is_dir():
            assert not folder.is_relative_to(path), f"{entry}: kustomize refuses an overlay inside its base"
            docs += render(path)
        else:
            docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for patch in kustomization.get("patches", []):
        hits = [doc for doc in docs if _matches(patch["target"], doc)]
        assert len(hits) == 1, f"patch target {patch['target']} matches {len(hits)} objects"
        _json6902(hits[0], yaml.safe_load(patch["patch"]))
    if "namespace" in kustomization:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kustomization["namespace"]
    for image in kustomization.get("images", []):
        for doc in docs:
            for container in _containers(doc):
                if container["image"].split("@")[0].split(":")[0] == image["name"]:
                    container["image"] = f"{image['newName']}:{image['newTag']}"
    return docs


@pytest.fixture(scope="module")
def plain() -> list[dict[str, Any]]:
    return render(PLAIN)


@pytest.fixture(scope="module")
def keda() -> list[dict[str, Any]]:
    return render(KEDA)


def only(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def stage_sets(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in docs if d["kind"] == "StatefulSet"
    }


def configmap(docs: list[dict[str, Any]]) -> dict[str, str]:
    return only(docs, "ConfigMap", "lightbox")["data"]


# -- the KEDA ScaledObject's schema ---------------------------------------------------------------

# The fields of keda.sh/v1alpha1 ScaledObject this project uses, as KEDA 2.18 documents them
# (reference/scaledobject-spec, scalers/apache-kafka). The CRD types trigger metadata as a map of
# strings: `allowIdleConsumers: false` unquoted is refused by the API server, so it is here too.
# Unknown keys fail: a misspelt `lagTreshold` would otherwise be ignored and the default used.
_STRING_BOOL = {"type": "string", "enum": ["true", "false"]}
_STRING_INT = {"type": "string", "pattern": "^[0-9]+$"}
KAFKA_TRIGGER_METADATA = {
    "type": "object",
    "required": ["bootstrapServers", "consumerGroup", "topic", "lagThreshold"],
    "additionalProperties": False,
    "properties": {
        "bootstrapServers": {"type": "string", "pattern": r"^[^,\s]+:[0-9]+(,[^,\s]+:[0-9]+)*$"},
        "consumerGroup": {"type": "string", "minLength": 1},
        "topic": {"type": "string", "minLength": 1},
        "lagThreshold": _STRING_INT,
        "activationLagThreshold": _STRING_INT,
        "offsetResetPolicy": {"type": "string", "enum": ["latest", "earliest"]},
        "allowIdleConsumers": _STRING_BOOL,
        "scaleToZeroOnInvalidOffset": _STRING_BOOL,
        "excludePersistentLag": _STRING_BOOL,
        "limitToPartitionsWithLag": _STRING_BOOL,
        "ensureEvenDistributionOfPartitions": _STRING_BOOL,
        "partitionLimitation": {"type": "string"},
        "sasl": {
            "type": "string",
            "enum": ["none", "plaintext", "scram_sha256", "scram_sha512", "gssapi", "oauthbearer"],
        },
        "tls": {"type": "string", "enum": ["enable", "disable"]},
    },
}
K8S_DEFS = "https://kubernetes.io/api/_definitions.json#/$defs/"
SCALED_OBJECT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"$ref": K8S_DEFS + "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string", "minLength": 1},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"const": 0},  # the only value the HPA supports, says KEDA
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {
                    "type": "object",
                    "required": ["failureThreshold", "replicas"],
                    "additionalProperties": False,
                    "properties": {
                        "failureThreshold": {"type": "integer", "minimum": 1},
                        "replicas": {"type": "integer", "minimum": 0},
                        "behavior": {
                            "enum": [
                                "static",
                                "currentReplicas",
                                "currentReplicasIfHigher",
                                "currentReplicasIfLower",
                            ]
                        },
                    },
                },
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string"},
                                # KEDA hands it to the HPA as it is: the HPA's own schema.
                                "behavior": {
                                    "$ref": K8S_DEFS
                                    + "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerBehavior"
                                },
                            },
                        },
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string"}, "kind": {"type": "string"}},
                            },
                            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                        "if": {"properties": {"type": {"const": "kafka"}}},
                        "then": {"properties": {"metadata": KAFKA_TRIGGER_METADATA}},
                    },
                },
            },
        },
    },
}


def _k8s_definitions() -> dict[str, Any]:
    schemas = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    return json.loads((schemas / f"v{K8S_VERSION}-local-strict" / "_definitions.json").read_text())


def validate_scaled_object(doc: dict[str, Any]) -> None:
    definitions = referencing.Resource.from_contents(_k8s_definitions())
    registry = referencing.Registry().with_resource(definitions.id(), definitions)
    jsonschema.Draft202012Validator(SCALED_OBJECT_SCHEMA, registry=registry).validate(doc)


def validate(doc: dict[str, Any]) -> None:
    if doc["apiVersion"].startswith("keda.sh/"):
        validate_scaled_object(doc)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


# -- every object is what the API server accepts -------------------------------------------------


@pytest.mark.parametrize("folder", [PLAIN, KEDA], ids=["plain", "keda"])
def test_every_rendered_object_is_valid_for_the_pinned_kubernetes(folder: Path) -> None:
    docs = render(folder)
    assert docs
    refused = []
    for doc in docs:
        try:
            validate(doc)
        except (ValidationError, jsonschema.ValidationError) as exc:
            path = "/".join(str(p) for p in exc.absolute_path)
            refused.append(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")
    assert not refused, "\n".join(refused)


def test_the_plain_variant_needs_no_custom_resource(plain: list[dict[str, Any]]) -> None:
    assert not [d for d in plain if d["apiVersion"].startswith("keda.sh/")]
    assert len({(d["kind"], d["metadata"]["name"]) for d in plain}) == len(plain), "an object twice"
    assert {d["metadata"].get("namespace") for d in plain if d["kind"] != "Namespace"} == {"lightbox"}


def test_strict_validation_refuses_an_unknown_field(plain: list[dict[str, Any]]) -> None:
    """The check is not vacuous: a misspelt field (here `resource` for `resources`) is refused."""
    doc = copy.deepcopy(only(plain, "StatefulSet", "lightbox-generate"))
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["resource"] = container.pop("resources")
    with pytest.raises(ValidationError):
        validate(doc)


@pytest.mark.parametrize(
    "spoil",
    [
        lambda so: so["spec"]["triggers"][0]["metadata"].update(allowIdleConsumers=False),
        lambda so: so["spec"]["triggers"][0]["metadata"].update(lagTreshold="64"),
        lambda so: so["spec"]["scaleTargetRef"].pop("name"),
        lambda so: so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"].update(
            stabilisationWindowSeconds=300
        ),
    ],
    ids=["unquoted-bool", "misspelt-key", "no-target", "misspelt-hpa-field"],
)
def test_the_scaled_object_schema_refuses_what_keda_would(keda: list[dict[str, Any]], spoil: Any) -> None:
    doc = copy.deepcopy(only(keda, "ScaledObject", "lightbox-generate"))
    validate(doc)
    spoil(doc)
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)


# -- the stages ----------------------------------------------------------------------------------


def test_every_stage_runs_as_a_statefulset_with_probes_and_requests(plain: list[dict[str, Any]]) -> None:
    sets = stage_sets(plain)
    assert set(sets) == set(STAGE_NAMES)
    metrics_port = int(configmap(plain)["LIGHTBOX_STAGE__METRICS_PORT"])
    assert metrics_port, "the probes need the stages' metrics endpoint on"
    image = only(plain, "Job", "lightbox-schemas")["spec"]["template"]["spec"]["containers"][0]["image"]
    for stage, sset in sets.items():
        assert sset["metadata"]["name"] == f"lightbox-{stage}"
        spec = sset["spec"]
        pod = spec["template"]["spec"]
        # The API server refuses a selector that does not select the template; the schema cannot.
        assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
        (container,) = pod["containers"]
        assert container["args"] == ["run", stage]
        assert container["image"] == image and ":" in image, "every process runs the one pushed image"
        requests = container["resources"]["requests"]
        assert {"cpu", "memory"} <= requests.keys(), stage
        assert "memory" in container["resources"]["limits"], stage
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"metrics": metrics_port}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            http = container[probe]["httpGet"]
            assert http["port"] in ports and http["path"] == "/metrics", (stage, probe)
        # Its pod name is its copy name, hence its transactional.id (docs: exactly once).
        (instance,) = [e for e in container["env"] if e["name"] == "LIGHTBOX_KAFKA__INSTANCE"]
        assert instance["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        home = configmap(plain)["LIGHTBOX_HOME"]
        assert home in {m["mountPath"] for m in container["volumeMounts"]}, "home must be writable"
        assert pod["terminationGracePeriodSeconds"] >= 30, "time to finish the batch and commit"
        if stage_spec(stage).singleton:
            assert spec["replicas"] == 1, f"{stage} is a singleton"


def test_every_container_requests_resources(plain: list[dict[str, Any]]) -> None:
    for doc in plain:
        for container in _containers(doc):
            assert {"cpu", "memory"} <= container["resources"]["requests"].keys(), doc["metadata"]["name"]


def test_the_stages_are_governed_by_a_headless_service_that_selects_them(plain: list[dict[str, Any]]) -> None:
    for sset in stage_sets(plain).values():
        service = only(plain, "Service", sset["spec"]["serviceName"])
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["selector"].items() <= sset["spec"]["template"]["metadata"]["labels"].items()


def test_the_registry_service_selects_the_registry_and_the_url_names_it(plain: list[dict[str, Any]]) -> None:
    deployment = only(plain, "Deployment", "lightbox-registry")
    service = only(plain, "Service", "lightbox-registry")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    url = urlsplit(configmap(plain)["LIGHTBOX_REGISTRY__URL"])
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == url.port]
    assert url.hostname == service["metadata"]["name"]
    assert url.path == urlsplit(RegistrySettings().url).path
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    assert container["image"].endswith(":" + RegistrySettings().version), "the version the tests run"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in {p["name"] for p in container["ports"]}


# -- settings: what the stages read exists and means what it says -----------------------------------


def _settings_path(key: str) -> list[str]:
    assert key.startswith("LIGHTBOX_"), key
    return key.removeprefix("LIGHTBOX_").lower().split("__")


def _field_exists(path: list[str]) -> bool:
    model: Any = Settings
    for part in path:
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return False
        model = fields[part].annotation
    return True


def environment(docs: list[dict[str, Any]]) -> dict[str, str]:
    """What a stage container's environment holds from envFrom: the config map and the secret."""
    secret = only(docs, "Secret", "lightbox-storage")
    return {**configmap(docs), **secret["stringData"]}


def test_every_setting_in_the_config_map_and_secret_is_one_lightbox_reads(
    plain: list[dict[str, Any]],
) -> None:
    # Settings ignores unknown LIGHTBOX_ variables (extra="ignore"): a misspelt key would be lost.
    for key in environment(plain):
        assert _field_exists(_settings_path(key)), f"{key} names no setting in processors/config.py"


def test_the_stages_settings_load_from_the_config_map(
    plain: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("LIGHTBOX_")]:
        monkeypatch.delenv(key)
    env = environment(plain)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    # What a stage needs to reach its dependencies comes from the cluster, not the local defaults.
    needed = [
        "LIGHTBOX_KAFKA__BOOTSTRAP",
        "LIGHTBOX_STORAGE__ENDPOINT",
        "LIGHTBOX_STORAGE__ACCESS_KEY",
        "LIGHTBOX_STORAGE__SECRET_KEY",
        "LIGHTBOX_STORAGE__BUCKET",
        "LIGHTBOX_REGISTRY__URL",
        "LIGHTBOX_CLICKHOUSE__URL",
        "LIGHTBOX_STAGE__METRICS_PORT",
        "LIGHTBOX_HOME",
    ]
    for key in needed:
        value: Any = settings
        for part in _settings_path(key):
            value = getattr(value, part)
        assert str(value) == env[key], key
    assert settings.kafka.replication_factor >= 3, "a fleet's topics survive a broker loss"
    assert settings.clickhouse.url, "several pods: the event log needs a ClickHouse server, not chDB"


def test_every_config_map_secret_and_key_referenced_exists(plain: list[dict[str, Any]]) -> None:
    maps = {d["metadata"]["name"]: d["data"] for d in plain if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"]: d["stringData"] for d in plain if d["kind"] == "Secret"}
    for doc in plain:
        for container in _containers(doc):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in maps
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    assert ref["key"] in maps[ref["name"]], f"{doc['metadata']['name']}: {ref}"


def test_the_jobs_run_code_that_exists(plain: list[dict[str, Any]]) -> None:
    schemas = only(plain, "Job", "lightbox-schemas")["spec"]["template"]["spec"]["containers"][0]
    assert schemas["command"][:2] == ["python", "-m"]
    assert importlib.util.find_spec(schemas["command"][2]) is not None
    assert schemas["command"][3] in {"check", "register"}
    topics = only(plain, "Job", "lightbox-topics")["spec"]["template"]["spec"]["containers"][0]
    assert topics["command"][:2] == ["python", "-c"]
    code = compile(topics["command"][2], "lightbox-topics", "exec")
    assert "ensure_topics" in code.co_names
    stack = importlib.import_module("deploy.local.stack")
    assert callable(stack.LocalStack.ensure_topics)
    assert {"configMapRef": {"name": "lightbox"}} in topics["envFrom"], "partitions, replication"


# -- the autoscaler ----------------------------------------------------------------------------------


def _configured(docs: list[dict[str, Any]]) -> Settings:
    data = configmap(docs)
    return Settings(
        kafka={
            "bootstrap": data["LIGHTBOX_KAFKA__BOOTSTRAP"],
            "topic_prefix": data["LIGHTBOX_KAFKA__TOPIC_PREFIX"],
            "partitions": int(data["LIGHTBOX_KAFKA__PARTITIONS"]),
        }
    )


def kafka_triggers(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] == "ScaledObject":
            for trigger in doc["spec"]["triggers"]:
                assert trigger["type"] == "kafka"
                yield doc, trigger["metadata"]


def test_the_scaled_object_scales_generate_on_its_own_group_and_input(keda: list[dict[str, Any]]) -> None:
    settings = _configured(keda)
    (generate,) = [spec for spec in STAGES if spec.name == "generate"]
    ((scaled, meta),) = list(kafka_triggers(keda))
    target = scaled["spec"]["scaleTargetRef"]
    sset = only(keda, target["kind"], target["name"])
    assert sset["apiVersion"] == target["apiVersion"]
    assert stage_sets(keda)["generate"] is sset
    assert scaled["metadata"]["namespace"] == sset["metadata"]["namespace"]
    assert meta["bootstrapServers"] == settings.kafka.bootstrap
    assert meta["consumerGroup"] == group_id_for(settings, "generate")
    assert generate.inputs == (Topic.GENERATION_REQUESTS,)
    assert meta["topic"] == TopicNames(settings.kafka.topic_prefix)(Topic.GENERATION_REQUESTS)
    # Counting lag of a group with no commit the way the stage starts reading it.
    assert meta["offsetResetPolicy"] == consumer_config(settings, "g")["auto.offset.reset"]


def test_group_mode_scales_no_further_than_the_partitions(keda: list[dict[str, Any]]) -> None:
    """One copy per partition at most (a group member past that holds nothing): the ceiling is
    the partition count the topics Job creates generation.requests with."""
    partitions = _configured(keda).kafka.partitions
    ((scaled, meta),) = list(kafka_triggers(keda))
    assert meta.get("allowIdleConsumers", "false") == "false"
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"] <= partitions
    if meta.get("ensureEvenDistributionOfPartitions") == "true":
        assert partitions % scaled["spec"]["maxReplicaCount"] == 0


def test_the_overlay_hands_generates_replicas_to_the_autoscaler_and_changes_nothing_else(
    plain: list[dict[str, Any]], keda: list[dict[str, Any]]
) -> None:
    assert "replicas" not in stage_sets(keda)["generate"]["spec"]
    expected = copy.deepcopy(plain)
    del stage_sets(expected)["generate"]["spec"]["replicas"]
    assert [d for d in keda if d["kind"] != "ScaledObject"] == expected
