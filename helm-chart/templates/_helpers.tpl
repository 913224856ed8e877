{{/* Chart name, overridable, so resources can be renamed without forking the chart. */}}
{{- define "selfheal-app.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release-scoped and within the 63-character DNS label limit. */}}
{{- define "selfheal-app.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of a per-track object ("<fullname>-canary"), truncated so the suffix survives. */}}
{{- define "selfheal-app.trackName" -}}
{{- $suffix := printf "-%s" .track }}
{{- printf "%s%s" (include "selfheal-app.fullname" .root | trunc (int (sub 63 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}

{{/* Chart name and version, for the helm.sh/chart label on metadata (never on pod templates). */}}
{{- define "selfheal-app.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels for every object's metadata except the version: selector labels, chart, owner. */}}
{{- define "selfheal-app.baseLabels" -}}
helm.sh/chart: {{ include "selfheal-app.chart" . }}
{{ include "selfheal-app.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: selfheal
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels for every object's metadata (never pod templates): base labels plus the stable version. */}}
{{- define "selfheal-app.labels" -}}
{{ include "selfheal-app.baseLabels" . }}
app.kubernetes.io/version: {{ include "selfheal-app.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
{{- end }}

{{/* Selector labels: minimal and never changed by an upgrade (selectors are immutable). */}}
{{- define "selfheal-app.selectorLabels" -}}
app.kubernetes.io/name: {{ include "selfheal-app.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of one track ({root, track}): the Deployments and per-track Services never overlap. */}}
{{- define "selfheal-app.trackSelectorLabels" -}}
{{ include "selfheal-app.selectorLabels" .root }}
track: {{ .track }}
{{- end }}

{{/* ServiceAccount the pods run as: the chart's own, or an existing one named in values. */}}
{{- define "selfheal-app.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "selfheal-app.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image tag of the stable track: image.tag, else the chart's appVersion. */}}
{{- define "selfheal-app.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion | toString }}
{{- end }}

{{/* Image reference ({root, image}): repository:tag, or repository@digest when a digest is pinned. */}}
{{- define "selfheal-app.image" -}}
{{- $repo := .image.repository | default .root.Values.image.repository }}
{{- $tag := .image.tag | default (include "selfheal-app.imageTag" .root) | toString }}
{{- if .image.digest }}
{{- printf "%s@%s" $repo .image.digest }}
{{- else }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the chaos bearer token, or "" when no token is configured. */}}
{{- define "selfheal-app.chaosSecretName" -}}
{{- if .Values.chaos.existingSecret }}
{{- .Values.chaos.existingSecret }}
{{- else if .Values.chaos.token }}
{{- printf "%s-chaos" (include "selfheal-app.fullname" .) }}
{{- end }}
{{- end }}

{{/* Stable replicas the PodDisruptionBudget protects: HPA minimum, else replicaCount. */}}
{{- define "selfheal-app.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}
{{- .Values.autoscaling.minReplicas }}
{{- else }}
{{- .Values.replicaCount }}
{{- end }}
{{- end }}

{{/* Backend Service of the main Ingress: stable pods only once a weighted canary Ingress exists. */}}
{{- define "selfheal-app.ingressBackend" -}}
{{- if and .Values.canary.enabled .Values.canary.ingress.enabled }}
{{- include "selfheal-app.trackName" (dict "root" . "track" "stable") }}
{{- else }}
{{- include "selfheal-app.fullname" . }}
{{- end }}
{{- end }}

{{/*
NetworkPolicy egress rule to the OTLP collector, "" while otel.endpoint is empty. Fields left
empty in networkPolicy.egress.otlp come from otel.endpoint: the port (80/443 without one), an
IP as a /32 (/128), else the namespace of "<service>.<namespace>[.svc...]" (the release's own
for a bare service name). A host that names no namespace fails the render.
*/}}
{{- define "selfheal-app.otlpEgress" -}}
{{- $o := .Values.networkPolicy.egress.otlp }}
{{- with .Values.otel.endpoint }}
{{- $u := urlParse . }}
{{- $host := $u.hostname }}
{{- $port := int $o.port }}
{{- if not $port }}
{{- $port = int (trimPrefix ":" (regexFind ":[0-9]+$" $u.host) | default (ternary "443" "80" (eq $u.scheme "https"))) }}
{{- end }}
{{- $peer := dict }}
{{- if $o.cidr }}
{{- $peer = dict "ipBlock" (dict "cidr" $o.cidr) }}
{{- else if $o.namespace }}
{{- $peer = dict "namespaceSelector" (dict "matchLabels" (dict "kubernetes.io/metadata.name" $o.namespace)) }}
{{- else if contains ":" $host }}
{{- $peer = dict "ipBlock" (dict "cidr" (printf "%s/128" $host)) }}
{{- else if regexMatch "^[0-9]+(\\.[0-9]+){3}$" $host }}
{{- $peer = dict "ipBlock" (dict "cidr" (printf "%s/32" $host)) }}
{{- else }}
{{- $labels := splitList "." $host }}
{{- $ns := "" }}
{{- if eq (len $labels) 1 }}
{{- $ns = $.Release.Namespace }}
{{- else if or (eq (len $labels) 2) (eq (index $labels 2) "svc") }}
{{- $ns = index $labels 1 }}
{{- else }}
{{- fail (printf "networkPolicy: cannot tell where otel.endpoint's host %q runs (not <service>.<namespace>[.svc...]): set networkPolicy.egress.otlp.cidr (outside the cluster) or networkPolicy.egress.otlp.namespace, or the app cannot export spans" $host) }}
{{- end }}
{{- $peer = dict "namespaceSelector" (dict "matchLabels" (dict "kubernetes.io/metadata.name" $ns)) }}
{{- end }}
{{- toYaml (list (dict "to" (list $peer) "ports" (list (dict "port" $port "protocol" "TCP")))) }}
{{- end }}
{{- end }}
