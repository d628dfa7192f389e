#!/usr/bin/env bash
# Create a kind cluster with KubeRay, the Dask operator, (optionally) Prometheus + Grafana and
# this chart, then apply an example Benchmark.  Needs: docker, kind, kubectl, helm.
#
#   scripts/kind-up.sh [--no-monitoring] [--skip-images] [--example examples/digits-knn.yaml]
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=testbed
TAG=0.1.0
NAMESPACE=bench
# KubeRay and the Dask operator match the schemas the tests validate against (KubeRay v1.7.0,
# dask-kubernetes 2026.3.0); kube-prometheus-stack: the latest unless KPS_VERSION is set.
KUBERAY_VERSION=${KUBERAY_VERSION:-1.7.0}
DASK_OPERATOR_VERSION=${DASK_OPERATOR_VERSION:-2026.3.0}
KPS_VERSION=${KPS_VERSION:-}
MONITORING=1
IMAGES=1
EXAMPLE=examples/digits-knn.yaml

while [ $# -gt 0 ]; do
  case "$1" in
    --no-monitoring) MONITORING=0 ;;
    --skip-images) IMAGES=0 ;;
    --example) EXAMPLE="$2"; shift ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "kind-up: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind-up: $tool is not installed" >&2; exit 1; }
done

if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --config kind-config.yaml
fi
kubectl config use-context "kind-$CLUSTER"

if [ "$IMAGES" = 1 ]; then
  scripts/build-images.sh --tag "$TAG"
  kind load docker-image --name "$CLUSTER" "testbed-runner:$TAG" "testbed-operator:$TAG"
fi

helm upgrade --install kuberay-operator kuberay-operator \
  --repo https://ray-project.github.io/kuberay-helm/ --version "$KUBERAY_VERSION" \
  --namespace kuberay --create-namespace --wait
helm upgrade --install dask-operator dask-kubernetes-operator \
  --repo https://helm.dask.org --version "$DASK_OPERATOR_VERSION" \
  --namespace dask-operator --create-namespace --wait

monitoring_values=()
if [ "$MONITORING" = 1 ]; then
  kps_version=()
  if [ -n "$KPS_VERSION" ]; then kps_version=(--version "$KPS_VERSION"); fi
  helm upgrade --install kps kube-prometheus-stack \
    --repo https://prometheus-community.github.io/helm-charts "${kps_version[@]}" \
    --namespace monitoring --create-namespace --wait \
    --set grafana.service.type=NodePort --set grafana.service.nodePort=30300 \
    --set grafana.sidecar.dashboards.enabled=true \
    --set grafana.sidecar.dashboards.searchNamespace=ALL
  monitoring_values=(--set metrics.serviceMonitor.enabled=true
                     --set metrics.serviceMonitor.additionalLabels.release=kps
                     --set metrics.podMonitors.enabled=true
                     --set metrics.podMonitors.additionalLabels.release=kps)
fi

kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
helm upgrade --install testbed charts/testbed --namespace testbed --create-namespace --wait \
  --set "watchNamespaces={$NAMESPACE}" \
  --set "image.tag=$TAG" --set "runnerImage.tag=$TAG" \
  "${monitoring_values[@]}"

kubectl apply -n "$NAMESPACE" -f "$EXAMPLE"
echo
echo "Benchmark applied. Watch it with:  kubectl get benchmarks -n $NAMESPACE -w"
if [ "$MONITORING" = 1 ]; then
  echo "Grafana: http://127.0.0.1:30300 (admin / prom-operator), dashboard 'Testbed: Ray vs Dask'"
fi
