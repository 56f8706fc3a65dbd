"""Checks deploy/k8s/ beyond the schemas: run by tests/deploy_checks.sh in a venv that has
kubernetes-validate (and its jsonschema).

- Every core object validates strictly (unknown fields are errors) against the Kubernetes
  OpenAPI schemas kubernetes-validate ships, for the oldest and newest versions we support.
- NetworkAttachmentDefinitions (a CRD, not in those schemas) validate against the Multus CRD's
  openAPIV3Schema, and their CNI config is JSON for the SR-IOV CNI.
- The pieces agree: every Multus network the DaemonSet names exists and its resourceName is a
  resource the pod requests; requests equal limits (Guaranteed QoS, whole CPUs); the hugepage
  volume's medium matches the requested size; the Prometheus port annotation, the container port
  and the appliance's metrics.listen are one port; the entrypoint reads the PCIDEVICE_ variables
  the device plugin sets for those resources; a ConfigMap change reaches the appliance (the
  entrypoint renders the mounted file again, the appliance watches the rendered one).
"""
import glob
import json
import os
import re
import subprocess
import sys

import jsonschema
import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
K8S = os.environ.get("K8S_DIR", os.path.join(ROOT, "deploy", "k8s"))
VERSIONS = ["1.28.0", "1.37.0"]

# The Multus CRD's schema (network-attachment-definition-crd.yaml, k8s.cni.cncf.io/v1).
NAD_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "k8s.cni.cncf.io/v1"},
        "kind": {"const": "NetworkAttachmentDefinition"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"config": {"type": "string"}},
        },
    },
}

problems = []


def fail(msg):
    problems.append(msg)


files = sorted(glob.glob(os.path.join(K8S, "*.yaml")))
docs = []
for f in files:
    with open(f) as fh:
        for d in yaml.safe_load_all(fh):
            if d:
                docs.append((os.path.basename(f), d))

core = [f for f in files if not any(n == os.path.basename(f) and d["kind"] == "NetworkAttachmentDefinition" for n, d in docs)]
for v in VERSIONS:
    r = subprocess.run([os.path.join(os.path.dirname(sys.executable), "kubernetes-validate"), "--strict", "--quiet", "-k", v, *core], capture_output=True, text=True)
    out = (r.stdout + r.stderr).strip()
    if r.returncode != 0 or "ERROR" in out or "WARN" in out:
        fail(f"kubernetes-validate -k {v}: {out}")
    else:
        print(f"kubernetes-validate --strict -k {v}: {len(core)} files OK")

by_kind = {}
for name, d in docs:
    by_kind.setdefault(d["kind"], []).append(d)

nads = {}
for d in by_kind.get("NetworkAttachmentDefinition", []):
    try:
        jsonschema.validate(d, NAD_SCHEMA)
    except jsonschema.ValidationError as e:
        fail(f"NetworkAttachmentDefinition {d['metadata'].get('name')}: {e.message}")
        continue
    name = d["metadata"]["name"]
    cni = json.loads(d["spec"]["config"])
    if cni.get("type") != "sriov" or cni.get("name") != name or "cniVersion" not in cni:
        fail(f"NetworkAttachmentDefinition {name}: CNI config {cni}")
    nads[name] = d["metadata"].get("annotations", {}).get("k8s.v1.cni.cncf.io/resourceName")
print(f"NetworkAttachmentDefinitions: {sorted(nads)}")

(ds,) = by_kind["DaemonSet"]
pod = ds["spec"]["template"]
(c,) = pod["spec"]["containers"]
res = c["resources"]
if res["requests"] != res["limits"]:
    fail("requests must equal limits (Guaranteed QoS for exclusive CPUs and hugepages)")
if not re.fullmatch(r"[0-9]+", str(res["requests"]["cpu"])):
    fail("cpu must be whole CPUs for the static CPU manager")
networks = [n.strip() for n in pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"].split(",")]
for n in networks:
    if n not in nads:
        fail(f"network {n} has no NetworkAttachmentDefinition")
    elif nads[n] not in res["requests"]:
        fail(f"network {n}: resource {nads[n]} is not requested by the pod")
huge = [k for k in res["requests"] if k.startswith("hugepages-")]
media = [v["emptyDir"]["medium"] for v in pod["spec"]["volumes"] if v.get("emptyDir", {}).get("medium", "").startswith("HugePages")]
if [h.replace("hugepages-", "HugePages-") for h in huge] != media:
    fail(f"hugepage requests {huge} vs volume media {media}")

(cm,) = by_kind["ConfigMap"]
cfg = yaml.safe_load(cm["data"]["appliance.yaml"])
listen_port = int(cfg["metrics"]["listen"].rsplit(":", 1)[1])
ann_port = int(pod["metadata"]["annotations"]["prometheus.io/port"])
container_port = c["ports"][0]["containerPort"]
if not (listen_port == ann_port == container_port):
    fail(f"metrics.listen port {listen_port}, prometheus.io/port {ann_port}, containerPort {container_port} differ")
entry = cm["data"]["entrypoint.sh"]
for r in nads.values():
    var = "PCIDEVICE_" + re.sub(r"[^A-Za-z0-9]", "_", r).upper()
    if var not in entry:
        fail(f"entrypoint.sh does not read {var} (resource {r})")

watch = (cfg.get("run") or {}).get("watch_config_s")
if not watch:
    fail("appliance.yaml: run.watch_config_s is not set: a ConfigMap change would not reload the appliance")
if not re.search(r"while sleep .*; do\s+render", entry):
    fail("entrypoint.sh does not render the mounted configuration again: a ConfigMap change would not reach the appliance")

if problems:
    print("k8s_check: FAILED\n  " + "\n  ".join(problems), file=sys.stderr)
    sys.exit(1)
print("k8s_check: OK")
