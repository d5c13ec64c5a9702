#!/usr/bin/env python3
"""Writes apiserver/src/protobuf/schema.rs: skiff's table of the Kubernetes protobuf messages.

Where the field numbers come from: every client-go binary embeds the gzipped FileDescriptorProto
of each upstream `generated.proto` it was built with. This script finds them in a kubectl
binary (the same minor as skiff's k8s-openapi feature, v1_33), walks the messages reachable
from the kinds skiff serves, and writes a compact Rust table of our own format:
message -> field number -> JSON name, wire type and whether a zero value is meaningful.

A zero scalar is kept when the Go field is a pointer (explicitly set, e.g. `replicas: 0`) or
required in JSON (no `omitempty`, e.g. `restartCount`); otherwise Go's protobuf marshaller
writes zeros that JSON would omit, so the decoder drops them. Required fields are read from
k8s-openapi's serializers; pointer fields are the hand-kept list `POINTERS` below (from the
upstream `types.go`).

Usage: scripts/gen-protobuf-schema.py [KUBECTL_BINARY] > apiserver/src/protobuf/schema.rs
"""

import glob
import os
import re
import sys
import zlib

KUBECTL = sys.argv[1] if len(sys.argv) > 1 else "/usr/lib/google-cloud-sdk/bin/kubectl.1.33"
OPENAPI = sorted(glob.glob(os.path.expanduser(
    "~/.cargo/registry/src/*/k8s-openapi-0.29.*/src/v1_33")))[-1]

META = "k8s.io.apimachinery.pkg.apis.meta.v1"
CORE = "k8s.io.api.core.v1"
# (apiVersion, kind, message) of every body skiff decodes.
ROOTS = [
    ("v1", "Namespace", CORE + ".Namespace"),
    ("v1", "Pod", CORE + ".Pod"),
    ("v1", "Service", CORE + ".Service"),
    ("v1", "Endpoints", CORE + ".Endpoints"),
    ("v1", "ConfigMap", CORE + ".ConfigMap"),
    ("v1", "Secret", CORE + ".Secret"),
    ("v1", "Node", CORE + ".Node"),
    ("v1", "Event", CORE + ".Event"),
    ("apps/v1", "Deployment", "k8s.io.api.apps.v1.Deployment"),
    ("apps/v1", "ReplicaSet", "k8s.io.api.apps.v1.ReplicaSet"),
    ("apps/v1", "StatefulSet", "k8s.io.api.apps.v1.StatefulSet"),
    ("coordination.k8s.io/v1", "Lease", "k8s.io.api.coordination.v1.Lease"),
    ("discovery.k8s.io/v1", "EndpointSlice", "k8s.io.api.discovery.v1.EndpointSlice"),
    ("networking.k8s.io/v1", "Ingress", "k8s.io.api.networking.v1.Ingress"),
    ("networking.k8s.io/v1", "IngressClass", "k8s.io.api.networking.v1.IngressClass"),
    ("autoscaling/v1", "Scale", "k8s.io.api.autoscaling.v1.Scale"),
    ("meta.k8s.io/v1", "DeleteOptions", META + ".DeleteOptions"),
    ("v1", "DeleteOptions", META + ".DeleteOptions"),
]

# Messages whose JSON form is not an object: the decoder converts them by name.
SPECIAL = {
    META + ".Time": "Time",
    META + ".MicroTime": "MicroTime",
    META + ".FieldsV1": "RawJson",
    "k8s.io.apimachinery.pkg.runtime.RawExtension": "RawJson",
    "k8s.io.apimachinery.pkg.api.resource.Quantity": "Quantity",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": "IntOrString",
}

# Go pointer scalars (`*int32`, `*bool`, `*string`...) in the reachable types: an explicit
# zero is data. From upstream types.go (core, apps, networking, discovery, coordination, meta).
# ScaleSpec.replicas is a plain int32, but a Scale body's 0 is the whole request: keep it.
POINTERS = set("""
ObjectMeta.deletionGracePeriodSeconds
OwnerReference.controller OwnerReference.blockOwnerDeletion
DeleteOptions.gracePeriodSeconds DeleteOptions.orphanDependents DeleteOptions.propagationPolicy
DeleteOptions.ignoreStoreReadErrorWithClusterBreakingPotential
Preconditions.uid Preconditions.resourceVersion
PodSpec.terminationGracePeriodSeconds PodSpec.activeDeadlineSeconds
PodSpec.automountServiceAccountToken PodSpec.shareProcessNamespace PodSpec.priority
PodSpec.enableServiceLinks PodSpec.preemptionPolicy PodSpec.setHostnameAsFQDN PodSpec.hostUsers
PodSpec.runtimeClassName
Container.restartPolicy EphemeralContainerCommon.restartPolicy
SecurityContext.privileged SecurityContext.runAsUser SecurityContext.runAsGroup
SecurityContext.runAsNonRoot SecurityContext.readOnlyRootFilesystem
SecurityContext.allowPrivilegeEscalation SecurityContext.procMount
PodSecurityContext.runAsUser PodSecurityContext.runAsGroup PodSecurityContext.runAsNonRoot
PodSecurityContext.fsGroup PodSecurityContext.fsGroupChangePolicy
PodSecurityContext.supplementalGroupsPolicy PodSecurityContext.seLinuxChangePolicy
SeccompProfile.localhostProfile AppArmorProfile.localhostProfile
WindowsSecurityContextOptions.gmsaCredentialSpecName WindowsSecurityContextOptions.gmsaCredentialSpec
WindowsSecurityContextOptions.runAsUserName WindowsSecurityContextOptions.hostProcess
Probe.terminationGracePeriodSeconds GRPCAction.service
ConfigMapVolumeSource.defaultMode ConfigMapVolumeSource.optional
SecretVolumeSource.defaultMode SecretVolumeSource.optional
ProjectedVolumeSource.defaultMode DownwardAPIVolumeSource.defaultMode DownwardAPIVolumeFile.mode
KeyToPath.mode ConfigMapKeySelector.optional SecretKeySelector.optional
ConfigMapEnvSource.optional SecretEnvSource.optional ConfigMapProjection.optional
SecretProjection.optional ServiceAccountTokenProjection.expirationSeconds
ClusterTrustBundleProjection.name ClusterTrustBundleProjection.signerName
ClusterTrustBundleProjection.optional
FCVolumeSource.lun HostPathVolumeSource.type CSIVolumeSource.readOnly CSIVolumeSource.fsType
AzureDiskVolumeSource.cachingMode AzureDiskVolumeSource.fsType AzureDiskVolumeSource.readOnly
AzureDiskVolumeSource.kind ISCSIVolumeSource.initiatorName
VolumeMount.mountPropagation VolumeMount.recursiveReadOnly
TypedLocalObjectReference.apiGroup TypedObjectReference.apiGroup TypedObjectReference.namespace
PersistentVolumeClaimSpec.storageClassName PersistentVolumeClaimSpec.volumeMode
PersistentVolumeClaimSpec.volumeAttributesClassName
Toleration.tolerationSeconds TopologySpreadConstraint.minDomains
TopologySpreadConstraint.nodeAffinityPolicy TopologySpreadConstraint.nodeTaintsPolicy
PodDNSConfigOption.value PodResourceClaim.resourceClaimName
PodResourceClaim.resourceClaimTemplateName PodResourceClaimStatus.resourceClaimName
ContainerStatus.started ContainerStatus.stopSignal Lifecycle.stopSignal
ContainerResizePolicy.restartPolicy
ServiceSpec.allocateLoadBalancerNodePorts ServiceSpec.loadBalancerClass
ServiceSpec.internalTrafficPolicy ServiceSpec.ipFamilyPolicy ServiceSpec.trafficDistribution
ClientIPConfig.timeoutSeconds ServicePort.appProtocol LoadBalancerIngress.ipMode
PortStatus.error EndpointPort.appProtocol EndpointAddress.nodeName
ConfigMap.immutable Secret.immutable
NodeSwapStatus.capacity NodeRuntimeHandlerFeatures.recursiveReadOnlyMounts
NodeRuntimeHandlerFeatures.userNamespaces NodeFeatures.supplementalGroupsPolicy
NodeConfigSource.configMap ResourceHealth.health
EventSeries.count
DeploymentSpec.replicas DeploymentSpec.revisionHistoryLimit DeploymentSpec.progressDeadlineSeconds
DeploymentStatus.collisionCount DeploymentStatus.terminatingReplicas
ReplicaSetSpec.replicas ReplicaSetStatus.terminatingReplicas
StatefulSetSpec.replicas StatefulSetSpec.revisionHistoryLimit
RollingUpdateStatefulSetStrategy.partition StatefulSetStatus.collisionCount
IngressSpec.ingressClassName HTTPIngressPath.pathType IngressPortStatus.error
IngressClassParametersReference.apiGroup IngressClassParametersReference.scope
IngressClassParametersReference.namespace
Endpoint.hostname Endpoint.nodeName Endpoint.zone
EndpointConditions.ready EndpointConditions.serving EndpointConditions.terminating
discovery.EndpointPort.name discovery.EndpointPort.protocol discovery.EndpointPort.port
discovery.EndpointPort.appProtocol
LeaseSpec.holderIdentity LeaseSpec.leaseDurationSeconds LeaseSpec.leaseTransitions
LeaseSpec.strategy LeaseSpec.preferredHolder
ScaleSpec.replicas
""".split())


def varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def fields(buf):
    """Yields (number, wire_type, value) of one protobuf message."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(buf, i)
        elif wire == 2:
            n, i = varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        yield number, wire, value


def descriptors(path):
    """The FileDescriptorProtos of k8s.io files embedded gzipped in a Go binary."""
    data = open(path, "rb").read()
    for m in re.finditer(rb"\x1f\x8b\x08\x00\x00\x00\x00\x00", data):
        try:
            raw = zlib.decompressobj(16 + 15).decompress(data[m.start():m.start() + 4_000_000])
        except zlib.error:
            continue
        if raw[:1] == b"\x0a" and b"k8s.io/" in raw[:200] and b"generated.proto" in raw[:200]:
            yield raw


# label 3 = repeated; type numbers from descriptor.proto.
SCALARS = {1: "F64", 3: "I64", 4: "U64", 5: "I32", 8: "Bool", 9: "Str", 12: "Bytes", 13: "U32"}


def load_messages():
    messages = {}

    def walk(package, prefix, body):
        name, flds, nested, is_map = None, [], [], False
        for n, _, v in fields(body):
            if n == 1:
                name = v.decode()
            elif n == 2:
                f = {"label": 1}
                for fn, _, fv in fields(v):
                    if fn == 1:
                        f["name"] = fv.decode()
                    elif fn == 3:
                        f["number"] = fv
                    elif fn == 4:
                        f["label"] = fv
                    elif fn == 5:
                        f["type"] = fv
                    elif fn == 6:
                        f["type_name"] = fv.decode().lstrip(".")
                flds.append(f)
            elif n == 3:
                nested.append(v)
            elif n == 7:
                is_map = any(on == 7 and ov == 1 for on, _, ov in fields(v))
        full = f"{prefix}.{name}"
        messages[full] = {"package": package, "name": name, "fields": flds, "map": is_map}
        for body in nested:
            walk(package, full, body)

    for raw in descriptors(KUBECTL):
        package = ""
        for n, _, v in fields(raw):
            if n == 2:
                package = v.decode()
        for n, _, v in fields(raw):
            if n == 4:
                walk(package, package, v)
    return messages


def openapi_required():
    """`Type.jsonName` of every field k8s-openapi serializes unconditionally (JSON-required)."""
    required, known = {}, {}
    for path in glob.glob(OPENAPI + "/**/*.rs", recursive=True):
        text = open(path).read()
        group = os.path.basename(os.path.dirname(os.path.dirname(path)))
        for struct in re.findall(r"pub struct (\w+) \{", text):
            known[(group, struct)] = set(
                re.findall(r'serialize_field\(&mut state, "(\w+)"', text))
        if "serialize_field" in text:
            for s in re.findall(r"pub struct (\w+) \{", text):
                s = (group, s)
                for fname in re.findall(
                        r'\n\s+crate::serde::ser::SerializeStruct::serialize_field\(&mut state, "(\w+)", &self\.',
                        text):
                    required.setdefault(s, set()).add(fname)
    return required, known


def group_of(full):
    """`core`, `apps`, `meta`...: the k8s-openapi folder above the version."""
    parts = full.split(".")
    return parts[3] if parts[2] == "api" else parts[-3]


def const_name(full):
    parts = full.split(".")
    group = group_of(full)
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", parts[-1]).upper()
    return f"{group.upper()}_{snake}"


def main():
    messages = load_messages()
    required, known = openapi_required()
    reachable, todo = [], [r[2] for r in ROOTS]
    while todo:
        full = todo.pop()
        if full in reachable or full in SPECIAL:
            continue
        if full not in messages:
            sys.exit(f"message {full} not found in {KUBECTL}")
        reachable.append(full)
        for f in messages[full]["fields"]:
            if f["type"] == 11:
                todo.append(f["type_name"])
    reachable.sort(key=const_name)
    inline_targets = set()
    for full in reachable:
        m = messages[full]
        names = known.get((group_of(full), m["name"]))
        for f in m["fields"]:
            if names is not None and f["name"] not in names and f["type"] == 11:
                inline_targets.add(f["type_name"])

    def ty(f):
        if f["type"] == 11:
            target = f["type_name"]
            if target in SPECIAL:
                return SPECIAL[target]
            entry = messages[target]
            if entry["map"]:
                key, value = entry["fields"][0], entry["fields"][1]
                return ty(value) if key["type"] == 9 else sys.exit(f"map key {target}")
            return f"Msg(&{const_name(target)})"
        if f["type"] not in SCALARS:
            sys.exit(f"type {f['type']} of {f['name']}")
        return SCALARS[f["type"]]

    used = set()
    out = [
        "//! Generated by `scripts/gen-protobuf-schema.py` from the descriptors in kubectl 1.33; do not edit.",
        "//! Each message: field number, JSON name, type, and how a zero value is treated.",
        "",
        "use super::message::{Card::*, Field as F, Message, Ty::*, Zero::*};",
        "",
        "/// `(apiVersion, kind)` of every body skiff decodes, with its message.",
        "pub static ROOTS: &[(&str, &str, &Message)] = &[",
    ]
    for api_version, kind, full in ROOTS:
        out.append(f'    ("{api_version}", "{kind}", &{const_name(full)}),')
    out.append("];")
    for full in reachable:
        m = messages[full]
        if m["map"]:
            continue
        group = group_of(full)
        req = required.get((group, m["name"]), set())
        if (group, m["name"]) not in known and full not in inline_targets:
            sys.exit(f"{m['name']} has no k8s-openapi type")
        names = known.get((group, m["name"]), set())
        out.append("")
        out.append(f'pub(crate) static {const_name(full)}: Message = Message {{ name: "{m["name"]}", fields: &[')
        for f in sorted(m["fields"], key=lambda f: f["number"]):
            name = f["name"]
            is_map = f["type"] == 11 and messages.get(f["type_name"], {}).get("map")
            card = "Map" if is_map else "List" if f["label"] == 3 else "One"
            if name not in names:
                # go-to-protobuf lowercases only the first letter (`aPIGroup` for `apiGroup`).
                name = next((n for n in names if n.lower() == name.lower()), name)
            if full not in inline_targets and name not in names:
                # Go embeds a struct with `json:",inline"`: its fields join ours in JSON.
                if f["type"] != 11 or f["type_name"] not in inline_targets:
                    sys.exit(f"{m['name']}.{name} is not in k8s-openapi's {m['name']}")
                card = "Inline"
            keys = {f"{m['name']}.{name}", f"{group}.{m['name']}.{name}"}
            pointer = bool(keys & POINTERS)
            used |= keys
            zero = "Keep" if pointer or name in req else "Omit"
            out.append(f'    F {{ number: {f["number"]}, json: "{name}", ty: {ty(f)}, card: {card}, zero: {zero} }},')
        out.append("] };")
    # A stale entry would silently turn a pointer back into "zero means unset".
    unused = POINTERS - used
    if unused:
        sys.exit(f"POINTERS names fields that are not in the reachable messages: {sorted(unused)}")
    print("\n".join(out))


main()
