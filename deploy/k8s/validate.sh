#!/usr/bin/env bash
# Checks the manifests: `kubectl kustomize` renders them, and
# kubernetes-validate (PyPI; it bundles the schemas, so it works offline)
# checks every rendered object, strictly (unknown fields are errors),
# against a current Kubernetes release. `.ci/run` installs the validator;
# kubectl comes with the machine image (when it is missing the rendering
# step says so and the raw files are validated instead).
set -euo pipefail
cd "$(dirname "$0")"
# The dashboard's ConfigMap is generated from deploy/grafana: it must agree.
python3 grafana-dashboard.py --check
version="${KUBERNETES_VERSION:-1.37.0}"
rendered=$(mktemp)
trap 'rm -f "$rendered"' EXIT
if command -v kubectl >/dev/null 2>&1; then
    kubectl kustomize . >"$rendered"
    echo "kubectl kustomize: $(grep -c '^kind:' "$rendered") objects"
else
    echo "kubectl not found: validating the files without kustomize"
    for file in $(sed -n 's/^  - \(.*\.yaml\)$/\1/p' kustomization.yaml); do
        cat "$file"
        echo "---"
    done >"$rendered"
fi
kubernetes-validate --strict --quiet -k "$version" "$rendered"
echo "kubernetes-validate $version: all objects valid"
