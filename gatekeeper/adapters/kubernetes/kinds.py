"""The table of Kubernetes kinds: where each keeps its pod templates and how many pods run at once.

Every kind the gate accepts is a row here (or in the operator's ``kubernetes.workloads``): a
kind that carries pods names its templates and replica factors; a kind that never carries pods
(ConfigMap, Service, ...) has no templates and measures zero. Anything else is refused
(``unmeasurable-request``): an unknown kind may create pods the gate cannot see.

Replica semantics, by kind (the most pods of one template that can exist at once):

- Pod 1; Deployment, ReplicaSet, StatefulSet, ReplicationController ``replicas`` (default 1);
- Job ``parallelism`` (default 1): more pods than that never run at once, and its hours bound
  the whole run (``activeDeadlineSeconds``); CronJob: one run of its job template;
- DaemonSet: one pod per node of the pool its pods may land on (from the inventory; refused
  without one);
- JobSet: per replicated job ``replicas`` x the job's ``parallelism``;
- Kubeflow jobs: per replica spec ``replicas`` (default 1); a PyTorchJob's
  ``elasticPolicy.maxReplicas`` can grow any of them;
- KubeRay: one head plus, per worker group, the larger of ``replicas`` and ``maxReplicas``
  (the autoscaler's ceiling) x ``numOfHosts``; RayJob adds its submitter pod;
- LeaderWorkerSet: ``replicas`` groups of ``size`` pods (one leader and ``size - 1`` workers);
- Volcano Job: per task ``replicas`` (default 1).

Kubeflow's TrainJob and CodeFlare's AppWrapper are not in the table: their pods come from a
runtime or an embedded object of any kind, so they are refused.

Rolling-update surge pods (Deployment ``maxSurge``) and RayService's second cluster during an
upgrade exist only after a further write (the new template), which is measured in turn.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ...config import KubernetesConfig, KubernetesTemplate, KubernetesWorkload

T = KubernetesTemplate
W = KubernetesWorkload

NODES = "@nodes"  # the DaemonSet factor: nodes of the pool


def _replicated(kind: str, api: str, factor: str = "spec.replicas=1") -> KubernetesWorkload:
    return W(kind, api, templates=(T("spec.template", count=(factor,)),), scale="spec.replicas")


def _kubeflow(kind: str, api: str, specs: str, extra: str = "") -> KubernetesWorkload:
    count = f"replicas|{extra}=1" if extra else "replicas=1"
    return W(
        kind,
        api,
        templates=(T("template", each=specs, count=(count,)),),
        hours=("spec.runPolicy.activeDeadlineSeconds",),
    )


def _ray(prefix: str) -> tuple[KubernetesTemplate, ...]:
    # With the in-tree autoscaler a group grows to maxReplicas, which the CRD defaults to 2^31-1
    # when absent: no default here, so only the inventory bounds it. Without the autoscaler the
    # larger of replicas and maxReplicas counts (a group with neither: unbounded as well).
    autoscaling = f"{prefix}.enableInTreeAutoscaling=true"
    groups = f"{prefix}.workerGroupSpecs"
    return (
        T(f"{prefix}.headGroupSpec.template"),
        T("template", each=groups, count=("maxReplicas", "numOfHosts=1"), when=autoscaling),
        T(
            "template",
            each=groups,
            count=("replicas|maxReplicas", "numOfHosts=1"),
            unless=autoscaling,
        ),
    )


_LWS = "spec.leaderWorkerTemplate"

BUILTIN: tuple[KubernetesWorkload, ...] = (
    W("Pod", "v1", templates=(T(""),), hours=("spec.activeDeadlineSeconds",)),
    _replicated("ReplicationController", "v1"),
    _replicated("Deployment", "apps/v1"),
    _replicated("ReplicaSet", "apps/v1"),
    _replicated("StatefulSet", "apps/v1"),
    W("DaemonSet", "apps/v1", templates=(T("spec.template", count=(NODES,)),)),
    W(
        "Job",
        "batch/v1",
        templates=(T("spec.template", count=("spec.parallelism=1",)),),
        hours=("spec.activeDeadlineSeconds",),
    ),
    *(
        W(
            "CronJob",
            api,
            templates=(
                T("spec.jobTemplate.spec.template", count=("spec.jobTemplate.spec.parallelism=1",)),
            ),
            hours=("spec.jobTemplate.spec.activeDeadlineSeconds",),
        )
        for api in ("batch/v1", "batch/v1beta1")
    ),
    *(
        W(
            "JobSet",
            api,
            templates=(
                T(
                    "template.spec.template",
                    each="spec.replicatedJobs",
                    count=("replicas=1", "template.spec.parallelism=1"),
                ),
            ),
        )
        for api in ("jobset.x-k8s.io/v1alpha2",)
    ),
    # Volcano: per task ``replicas`` (default 1) pods of its template
    W(
        "Job",
        "batch.volcano.sh/v1alpha1",
        templates=(T("template", each="spec.tasks", count=("replicas=1",)),),
    ),
    _kubeflow(
        "PyTorchJob",
        "kubeflow.org/v1",
        "spec.pytorchReplicaSpecs",
        "$.spec.elasticPolicy.maxReplicas",
    ),
    _kubeflow("TFJob", "kubeflow.org/v1", "spec.tfReplicaSpecs"),
    _kubeflow("MPIJob", "kubeflow.org/v1", "spec.mpiReplicaSpecs"),
    _kubeflow("MPIJob", "kubeflow.org/v2beta1", "spec.mpiReplicaSpecs"),
    _kubeflow("XGBoostJob", "kubeflow.org/v1", "spec.xgbReplicaSpecs"),
    _kubeflow("PaddleJob", "kubeflow.org/v1", "spec.paddleReplicaSpecs"),
    _kubeflow("MXJob", "kubeflow.org/v1", "spec.mxReplicaSpecs"),
    *(
        w
        for api in ("ray.io/v1", "ray.io/v1alpha1")
        for w in (
            W("RayCluster", api, templates=_ray("spec")),
            W(
                "RayJob",
                api,
                templates=(*_ray("spec.rayClusterSpec"), T("spec.submitterPodTemplate")),
                hours=("spec.activeDeadlineSeconds",),
            ),
            W("RayService", api, templates=_ray("spec.rayClusterConfig")),
        )
    ),
    W(
        "LeaderWorkerSet",
        "leaderworkerset.x-k8s.io/v1",
        templates=(
            T(f"{_LWS}.leaderTemplate", count=("spec.replicas=1",)),
            # without a leader template the leader is a worker-template pod too
            T(
                f"{_LWS}.workerTemplate",
                count=("spec.replicas=1", f"{_LWS}.size=1"),
                unless=f"{_LWS}.leaderTemplate",
            ),
            T(
                f"{_LWS}.workerTemplate",
                count=("spec.replicas=1", f"{_LWS}.size-1=1"),
                when=f"{_LWS}.leaderTemplate",
            ),
        ),
        scale="spec.replicas",
    ),
    # DRA objects are measured by dra.py; listed so that they are known kinds.
    *(
        W(kind, f"resource.k8s.io/{v}")
        for kind in ("ResourceClaim", "ResourceClaimTemplate", "DeviceClass", "ResourceSlice")
        for v in ("v1alpha3", "v1beta1", "v1beta2", "v1")
    ),
)

# Kinds that never carry pods: zero GPUs. An explicit list; anything else not in the table is
# refused. (HorizontalPodAutoscaler and KEDA's ScaledObject are deliberately absent: they grow a
# workload without any further write through the gate.)
# fmt: off
ZERO_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("v1", ("ConfigMap", "Secret", "Service", "ServiceAccount", "Endpoints", "Event", "Namespace",
            "PersistentVolumeClaim", "PersistentVolume", "LimitRange", "ResourceQuota", "Binding",
            "Eviction")),
    ("events.k8s.io/v1", ("Event",)),
    ("discovery.k8s.io/v1", ("EndpointSlice",)),
    ("coordination.k8s.io/v1", ("Lease",)),
    ("rbac.authorization.k8s.io/v1", ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")),
    ("networking.k8s.io/v1", ("NetworkPolicy", "Ingress", "IngressClass")),
    ("policy/v1", ("PodDisruptionBudget", "Eviction")),
    ("scheduling.k8s.io/v1", ("PriorityClass",)),
    ("storage.k8s.io/v1", ("StorageClass", "CSIDriver", "CSINode", "VolumeAttachment")),
    ("authentication.k8s.io/v1", ("TokenReview", "TokenRequest", "SelfSubjectReview")),
    ("authorization.k8s.io/v1", ("SubjectAccessReview", "SelfSubjectAccessReview",
                                 "LocalSubjectAccessReview", "SelfSubjectRulesReview")),
    ("certificates.k8s.io/v1", ("CertificateSigningRequest",)),
    ("kueue.x-k8s.io/v1beta1", ("LocalQueue",)),
)
# fmt: on

# Kinds the rules below get wrong (``Endpoints`` is plural already).
_PLURAL_EXCEPTIONS = {"Endpoints": "endpoints"}


def plural(kind: str) -> str:
    """The URL resource of a kind (``PyTorchJob`` -> ``pytorchjobs``)."""
    if kind in _PLURAL_EXCEPTIONS:
        return _PLURAL_EXCEPTIONS[kind]
    lower = kind.lower()
    if lower.endswith("y") and not lower.endswith(("ay", "ey", "oy")):
        return lower[:-1] + "ies"
    if lower.endswith(("s", "x")):
        return lower + "es"
    return lower + "s"


def group_of(api_version: str) -> str:
    """``apps/v1`` -> ``apps``; ``v1`` -> ``""`` (the core group)."""
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


@dataclass(frozen=True, slots=True)
class Kinds:
    """The table looked up by (group/version, kind) and by (group/version, resource)."""

    by_kind: dict[tuple[str, str], KubernetesWorkload]
    by_resource: dict[tuple[str, str], KubernetesWorkload]

    def kind(self, api_version: str, kind: str) -> KubernetesWorkload | None:
        return self.by_kind.get((api_version, kind))

    def resource(self, api_version: str, resource: str) -> KubernetesWorkload | None:
        return self.by_resource.get((api_version, resource.lower()))


def _all(extra: Iterable[KubernetesWorkload]) -> Iterator[KubernetesWorkload]:
    yield from BUILTIN
    for api, kinds in ZERO_KINDS:
        for kind in kinds:
            yield W(kind, api)
    yield from extra  # later rows win: an operator may redefine a built-in kind


def build_kinds(extra: Iterable[KubernetesWorkload] = ()) -> Kinds:
    by_kind: dict[tuple[str, str], KubernetesWorkload] = {}
    by_resource: dict[tuple[str, str], KubernetesWorkload] = {}
    for w in _all(extra):
        by_kind[(w.api_version, w.kind)] = w
        by_resource[(w.api_version, (w.resource or plural(w.kind)).lower())] = w
    return Kinds(by_kind, by_resource)


# ----------------------------------------------------------------------------- path syntax

_FIELD = r"[A-Za-z_][A-Za-z0-9_]*"
_PATH = re.compile(rf"^(\$\.)?{_FIELD}(\.{_FIELD})*$")
_FACTOR = re.compile(
    rf"^((?:\$\.)?{_FIELD}(?:\.{_FIELD})*(?:\|(?:\$\.)?{_FIELD}(?:\.{_FIELD})*)*)(?:-(\d{{1,6}}))?(?:=(\d{{1,9}}))?$"
)


@dataclass(frozen=True, slots=True)
class Factor:
    """One parsed replica factor: the largest present of ``paths`` minus ``minus``, else
    ``default`` (``None``: unbounded); ``nodes``: the pool's node count."""

    paths: tuple[str, ...]
    minus: int
    default: int | None
    nodes: bool = False


def parse_factor(text: str) -> Factor:
    """Parse ``a|b-1=1`` (``ValueError`` with a message on bad syntax)."""
    if text == NODES:
        return Factor((), 0, None, nodes=True)
    m = _FACTOR.match(text)
    if not m:
        raise ValueError(f"bad replica factor {text!r} (expected field|field-N=default)")
    default = int(m.group(3)) if m.group(3) is not None else None
    return Factor(tuple(m.group(1).split("|")), int(m.group(2) or 0), default)


def check_path(text: str, *, empty_ok: bool = False) -> None:
    if text == "" and empty_ok:
        return
    if not _PATH.match(text):
        raise ValueError(f"bad field path {text!r} (expected dotted field names)")


def check_tables(section: KubernetesConfig) -> list[tuple[str, str]]:
    """Problems in an operator's tables as (key path, message); empty when all parse."""
    problems: list[tuple[str, str]] = []
    for i, w in enumerate(section.workloads):
        base = f"workloads[{i}]"
        for key, path in (("scale", w.scale),):
            if path is not None:
                _collect(problems, f"{base}.{key}", lambda p=path: check_path(p))
        for j, h in enumerate(w.hours):
            _collect(problems, f"{base}.hours[{j}]", lambda p=h: check_path(p))
        for j, t in enumerate(w.templates):
            tb = f"{base}.templates[{j}]"
            _collect(problems, f"{tb}.template", lambda p=t.template: check_path(p, empty_ok=True))
            if t.each is not None:
                _collect(problems, f"{tb}.each", lambda p=t.each: check_path(p))
            for key, opt in (("when", t.when), ("unless", t.unless)):
                if opt is not None:
                    _collect(problems, f"{tb}.{key}", lambda p=opt: check_path(p.split("=")[0]))
            for k, f in enumerate(t.count):
                _collect(problems, f"{tb}.count[{k}]", lambda p=f: parse_factor(p))
    return problems


def _collect(problems: list[tuple[str, str]], key: str, check: object) -> None:
    try:
        check()  # type: ignore[operator]
    except ValueError as exc:
        problems.append((key, str(exc)))


__all__ = [
    "BUILTIN",
    "NODES",
    "ZERO_KINDS",
    "Factor",
    "Kinds",
    "build_kinds",
    "check_tables",
    "group_of",
    "parse_factor",
    "plural",
]
