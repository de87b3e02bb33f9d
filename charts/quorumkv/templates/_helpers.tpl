{{/* Names and labels shared by the templates. */}}
{{- define "quorumkv.name" -}}quorumkv{{- end -}}

{{- define "quorumkv.fullname" -}}
{{- if contains "quorumkv" .Release.Name -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-quorumkv-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "quorumkv.selectorLabels" -}}
app.kubernetes.io/name: quorumkv-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "quorumkv.labels" -}}
{{ include "quorumkv.selectorLabels" . }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: quorumkv
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "quorumkv.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "quorumkv.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "quorumkv.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Namespaces the operator watches when not cluster-wide: the release namespace first. */}}
{{- define "quorumkv.watchedNamespaces" -}}
{{- $all := prepend .Values.watch.namespaces .Release.Namespace | uniq -}}
{{- join "," $all -}}
{{- end -}}

{{- define "quorumkv.peering" -}}
{{- if gt (int .Values.replicaCount) 1 -}}true{{- end -}}
{{- end -}}

{{/* RBAC rules, the same for the Role and the ClusterRole. */}}
{{- define "quorumkv.rules" -}}
- apiGroups: [quorumkv.dev]
  resources: [kvclusters]
  verbs: [get, list, watch, patch, update]
- apiGroups: [quorumkv.dev]
  resources: [kvclusters/status]
  verbs: [get, patch, update]
- apiGroups: [quorumkv.dev]
  resources: [kvclusters/finalizers]
  verbs: [update]
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, create, patch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, list, patch, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
