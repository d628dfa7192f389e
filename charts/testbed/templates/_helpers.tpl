{{/* The chart's name, or nameOverride. */}}
{{- define "testbed.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The operator's objects' name: fullnameOverride, else <release>-<name> (the release's name
alone when it contains the chart's name), as `helm create` writes it. */}}
{{- define "testbed.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "testbed.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "testbed.labels" -}}
app.kubernetes.io/name: {{ include "testbed.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "testbed.selector" -}}
app.kubernetes.io/name: {{ include "testbed.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The operator's ServiceAccount: serviceAccount.name, else the full name when the chart
creates it, else "default". */}}
{{- define "testbed.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "testbed.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The default runner image: runnerImage as {repository, tag} (tag empty: appVersion), or
the deprecated string form `repo:tag` as it is. */}}
{{- define "testbed.runnerImage" -}}
{{- $img := .Values.runnerImage -}}
{{- if kindIs "string" $img -}}
{{- $img -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* A monitor's labels: additionalLabels, plus the deprecated `labels` (additionalLabels win
where both set a key). */}}
{{- define "testbed.monitorLabels" -}}
{{- $labels := merge (dict) (default (dict) .additionalLabels) (default (dict) .labels) -}}
{{- with $labels -}}
{{- toYaml . -}}
{{- end -}}
{{- end -}}

{{/* Namespaces that get the runner's ServiceAccount and Role. */}}
{{- define "testbed.runnerNamespaces" -}}
{{- $ns := .Values.runnerNamespaces -}}
{{- if not $ns -}}{{- $ns = .Values.watchNamespaces -}}{{- end -}}
{{- if not $ns -}}{{- $ns = list .Release.Namespace -}}{{- end -}}
{{- toJson $ns -}}
{{- end -}}

{{/* The operator's rules: exactly the verbs and resources it uses (see docs/operator.md). */}}
{{- define "testbed.operatorRules" -}}
- apiGroups: ["testbed.dev"]
  resources: ["benchmarks"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["testbed.dev"]
  resources: ["benchmarks/status"]
  verbs: ["patch"]
# Children carry an ownerReference with blockOwnerDeletion; the OwnerReferencesPermission-
# Enforcement admission plugin (plugin/pkg/admission/gc/gc_admission.go) lets only those who
# may update the owner's finalizers set it.
- apiGroups: ["testbed.dev"]
  resources: ["benchmarks/finalizers"]
  verbs: ["update"]
- apiGroups: ["ray.io"]
  resources: ["rayjobs"]
  verbs: ["create", "get", "list", "delete"]
- apiGroups: ["ray.io"]
  resources: ["rayclusters"]
  verbs: ["list", "delete"]
- apiGroups: ["kubernetes.dask.org"]
  resources: ["daskclusters"]
  verbs: ["create", "get", "list", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "delete"]
- apiGroups: [""]
  resources: ["resourcequotas"]
  verbs: ["list"]
# Events: create (the Benchmark's), list (a trial's controllers' FailedCreate).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "list"]
# A trial's pods that cannot start (image pulls, missing Secrets, crash loops).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# Before planning: does the runner's ServiceAccount exist in the Benchmark's namespace?
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get"]
{{- if .Values.networkPolicy.enabled }}
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create", "get", "list", "delete"]
{{- end }}
{{- end -}}
