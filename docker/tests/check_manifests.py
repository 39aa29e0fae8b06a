#!/usr/bin/env python3
"""Validates every manifest in docker/k8s and the Helm chart's rendered output against the
Kubernetes schemas (PyPI kubernetes-validate) for a current Kubernetes version.

The chart is rendered here by a small renderer of the template subset it uses (value
substitution, `quote`, `toYaml | nindent N`, `if`/`end`), so no Helm binary is needed; with
Helm installed, `helm template` renders the same chart.

Custom resources (the Multus NetworkAttachmentDefinition) are not in the Kubernetes schemas:
they are checked against the CRD's own rules here (apiVersion, kind, resourceName
annotation, spec.config being CNI JSON that vswitch-cni accepts).

  docker/tests/check_manifests.py [--k8s-version 1.34.0] [--render-to DIR] [--extra FILE]
"""
import argparse
import json
import os
import re
import sys

import yaml
import kubernetes_validate
import kubernetes_validate.utils

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K8S = os.path.join(ROOT, "docker", "k8s")
CHART = os.path.join(ROOT, "docker", "helm", "vswitch")


def lookup(ctx, path):
    v = ctx
    for part in path.strip(".").split("."):
        if not isinstance(v, dict) or part not in v:
            raise KeyError(f"no value .{path.strip('.')}")
        v = v[part]
    return v


def render(text, ctx):
    """Renders the chart's template subset."""
    def expr(e):
        e = e.strip()
        parts = [p.strip() for p in e.split("|")]
        head = parts[0]
        if head.startswith("toYaml "):
            value = yaml.safe_dump(lookup(ctx, head[len("toYaml "):]), default_flow_style=False).rstrip("\n")
        else:
            value = lookup(ctx, head)
        for f in parts[1:]:
            if f == "quote":
                value = json.dumps(str(value))
            elif f.startswith("nindent "):
                n = int(f.split()[1])
                value = "\n" + "\n".join(" " * n + ln for ln in str(value).splitlines())
            else:
                raise ValueError(f"unsupported template function '{f}'")
        return str(value)

    # if/end blocks (not nested in this chart).
    def cond(m):
        return m.group(2) if lookup(ctx, m.group(1)) else ""
    text = re.sub(r"\{\{-?\s*if\s+(\S+)\s*-?\}\}(.*?)\{\{-?\s*end\s*-?\}\}", cond, text, flags=re.S)
    # "{{-" also eats the whitespace (and newline) before it, as in Go templates.
    text = re.sub(r"\s*\{\{-(.*?)\}\}", lambda m: expr(m.group(1)), text)
    return re.sub(r"\{\{(.*?)\}\}", lambda m: expr(m.group(1)), text)


def render_chart(release="vswitch", overrides=()):
    """The chart's templates rendered with its values, and `overrides` ("a.b=value", as
    `helm --set`; values are strings)."""
    chart = yaml.safe_load(open(os.path.join(CHART, "Chart.yaml")))
    values = yaml.safe_load(open(os.path.join(CHART, "values.yaml")))
    for o in overrides:
        path, value = o.split("=", 1)
        *parents, leaf = path.split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        if leaf not in node:
            sys.exit(f"check_manifests.py: --set {o}: the chart has no value {path}")
        node[leaf] = value
    ctx = {"Values": values, "Release": {"Name": release, "Namespace": values.get("namespace", "default")},
           "Chart": {"Name": chart["name"], "AppVersion": chart["appVersion"], "Version": chart["version"]}}
    out = {}
    tdir = os.path.join(CHART, "templates")
    for name in sorted(os.listdir(tdir)):
        if name.endswith(".yaml"):
            out[name] = render(open(os.path.join(tdir, name)).read(), ctx)
    return out


def check_nad(doc, where):
    problems = []
    if doc.get("apiVersion") != "k8s.cni.cncf.io/v1":
        problems.append("apiVersion must be k8s.cni.cncf.io/v1")
    if not doc.get("metadata", {}).get("annotations", {}).get("k8s.v1.cni.cncf.io/resourceName"):
        problems.append("no k8s.v1.cni.cncf.io/resourceName annotation")
    try:
        conf = json.loads(doc["spec"]["config"])
        if conf.get("type") != "vswitch-cni" or conf.get("cniVersion") != "1.0.0" or not conf.get("name"):
            problems.append("spec.config: type vswitch-cni, cniVersion 1.0.0 and a name are required")
        if conf.get("ipam", {}).get("type") != "host-local":
            problems.append("spec.config: ipam.type should be host-local")
    except (KeyError, ValueError) as e:
        problems.append(f"spec.config is not CNI JSON: {e}")
    return [f"{where}: NetworkAttachmentDefinition: {p}" for p in problems]


def check_daemonset(doc, where):
    """What the schema cannot say: the switch's pod must get exclusive CPUs and hugepages."""
    problems = []
    spec = doc["spec"]["template"]["spec"]
    c = next((c for c in spec["containers"] if "--pod" in c.get("args", [])), None)
    if c is None:
        return [f"{where}: DaemonSet: no container runs vswitchd --pod"]
    req, lim = c["resources"].get("requests", {}), c["resources"].get("limits", {})
    if req != lim:
        problems.append("requests must equal limits (Guaranteed QoS)")
    cpu = str(lim.get("cpu", ""))
    if not cpu.isdigit() or int(cpu) < 2:
        problems.append(f"cpu must be a whole number of CPUs, at least 2 (is {cpu!r})")
    if not any(k.startswith("hugepages-") for k in lim):
        problems.append("no hugepages-2Mi/1Gi limit")
    if not any("/" in k for k in lim):
        problems.append("no SR-IOV device plugin resource")
    if not c.get("securityContext", {}).get("privileged"):
        problems.append("the switch container must be privileged")
    for probe in ("livenessProbe", "readinessProbe"):
        if "grpc" not in c.get(probe, {}):
            problems.append(f"{probe} must be a gRPC probe on the health service")
    mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
    for path in ("/dev/hugepages", "/run/vswitch"):
        if path not in mounts:
            problems.append(f"{path} is not mounted")
    ann = doc["spec"]["template"]["metadata"].get("annotations", {})
    if ann.get("prometheus.io/scrape") != "true":
        problems.append("no prometheus.io/scrape annotation")
    return [f"{where}: DaemonSet: {p}" for p in problems]


def validate_text(text, where, version):
    problems, kinds = [], []
    for doc in yaml.safe_load_all(text):
        if not doc:
            continue
        kinds.append(doc.get("kind"))
        if doc.get("kind") == "NetworkAttachmentDefinition":
            problems += check_nad(doc, where)
            continue
        if doc.get("kind") == "DaemonSet":
            problems += check_daemonset(doc, where)
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{where}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}: "
                            f"{'.'.join(str(p) for p in e.path)}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.append(f"{where}: {e}")
    return problems, kinds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k8s-version", default=kubernetes_validate.utils.latest_version(),
                    help="default: the newest the installed kubernetes-validate knows")
    ap.add_argument("--render-to", help="also write the rendered chart here")
    ap.add_argument("--extra", action="append", default=[], help="validate this file too")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="render the chart with this value (a string), as helm --set")
    args = ap.parse_args()
    problems, seen = [], []
    for name in sorted(os.listdir(K8S)):
        if name.endswith(".yaml"):
            p, kinds = validate_text(open(os.path.join(K8S, name)).read(), f"docker/k8s/{name}", args.k8s_version)
            problems += p
            seen += [f"docker/k8s/{name}:{k}" for k in kinds]
    for path in args.extra:
        p, kinds = validate_text(open(path).read(), path, args.k8s_version)
        problems += p
        seen += [f"{path}:{k}" for k in kinds]
    for name, text in render_chart(overrides=args.set).items():
        if args.render_to:
            os.makedirs(args.render_to, exist_ok=True)
            open(os.path.join(args.render_to, name), "w").write(text)
        p, kinds = validate_text(text, f"chart templates/{name}", args.k8s_version)
        problems += p
        seen += [f"chart/{name}:{k}" for k in kinds]
    print("\n".join(f"checked {s}" for s in seen))
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    print(f"all {len(seen)} objects valid for Kubernetes {args.k8s_version}")


if __name__ == "__main__":
    main()
