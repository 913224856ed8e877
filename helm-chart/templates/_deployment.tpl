{{/*
One Deployment of a track, shared by the stable and canary tracks so they differ only where the
values say so. Argument: dict with
  root      the chart context
  track     "stable" or "canary"
  name      object name
  replicas  replica count, or nil when the HPA owns it
  image     {repository, tag, digest} (empty fields fall back to image.*)
  fault     {profile, errorPercent, latencyMs, leakMibPerSec, leakCapMib}
  pool      {size, waitMs} of the simulated connection pool
  message   APP_MESSAGE
  podAnnotations  extra pod annotations
*/}}
{{- define "selfheal-app.deployment" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $sel := dict "root" $root "track" .track -}}
{{- $image := include "selfheal-app.image" (dict "root" $root "image" .image) -}}
{{- $version := (.image.tag | default (include "selfheal-app.imageTag" $root)) | toString | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "selfheal-app.baseLabels" $root | nindent 4 }}
    app.kubernetes.io/version: {{ $version | quote }}
    track: {{ .track }}
spec:
  {{- if not (kindIs "invalid" .replicas) }}
  replicas: {{ .replicas }}
  {{- end }}
  revisionHistoryLimit: {{ $v.revisionHistoryLimit }}
  progressDeadlineSeconds: {{ $v.progressDeadlineSeconds }}
  minReadySeconds: {{ $v.minReadySeconds }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: {{ $v.strategy.maxSurge }}
      maxUnavailable: {{ $v.strategy.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "selfheal-app.trackSelectorLabels" $sel | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "selfheal-app.trackSelectorLabels" $sel | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- /* Track annotations win over podAnnotations; a new chart-managed chaos token rolls the pods. */}}
      {{- $ann := merge dict (.podAnnotations | default dict) ($v.podAnnotations | default dict) }}
      {{- if and $v.chaos.token (not $v.chaos.existingSecret) }}
      {{- $_ := set $ann "checksum/chaos-token" ($v.chaos.token | sha256sum) }}
      {{- end }}
      {{- with $ann }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "selfheal-app.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $v.serviceAccount.automountServiceAccountToken }}
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      terminationGracePeriodSeconds: {{ $v.termination.gracePeriodSeconds }}
      securityContext:
        {{- toYaml $v.podSecurityContext | nindent 8 }}
      containers:
        - name: app
          image: {{ $image }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          ports:
            - name: http
              containerPort: {{ $v.containerPort }}
              protocol: TCP
          env:
            - name: LISTEN_ADDR
              value: "0.0.0.0:{{ $v.containerPort }}"
            - name: APP_TRACK
              value: {{ .track | quote }}
            - name: APP_MESSAGE
              value: {{ .message | quote }}
            - name: APP_FAULT_PROFILE
              value: {{ .fault.profile | quote }}
            - name: APP_FAULT_ERROR_PERCENT
              value: {{ .fault.errorPercent | quote }}
            - name: APP_FAULT_LATENCY_MS
              value: {{ .fault.latencyMs | quote }}
            - name: APP_FAULT_LEAK_MIB_PER_SEC
              value: {{ .fault.leakMibPerSec | quote }}
            - name: APP_FAULT_LEAK_CAP_MIB
              value: {{ .fault.leakCapMib | quote }}
            - name: APP_POOL_SIZE
              value: {{ .pool.size | quote }}
            - name: APP_POOL_WAIT_MS
              value: {{ .pool.waitMs | quote }}
            - name: CHAOS_ENABLED
              value: {{ $v.chaos.enabled | quote }}
            {{- with include "selfheal-app.chaosSecretName" $root }}
            - name: CHAOS_TOKEN
              valueFrom:
                secretKeyRef:
                  name: {{ . }}
                  key: token
            {{- end }}
            - name: APP_WARMUP_SECS
              value: {{ $v.app.warmupSecs | quote }}
            - name: APP_SHUTDOWN_DELAY_SECS
              value: {{ $v.app.shutdownDelaySecs | quote }}
            - name: APP_SHUTDOWN_TIMEOUT_SECS
              value: {{ $v.app.shutdownTimeoutSecs | quote }}
            - name: APP_REQUEST_TIMEOUT_MS
              value: {{ $v.app.requestTimeoutMs | quote }}
            - name: APP_BODY_LIMIT_BYTES
              value: {{ $v.app.bodyLimitBytes | quote }}
            - name: LOG_FORMAT
              value: {{ $v.app.logFormat | quote }}
            - name: RUST_LOG
              value: {{ $v.app.logLevel | quote }}
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: POD_NAMESPACE
              valueFrom:
                fieldRef:
                  fieldPath: metadata.namespace
            - name: OTEL_SERVICE_NAME
              value: {{ $v.otel.serviceName | default (include "selfheal-app.name" $root) | quote }}
            - name: OTEL_RESOURCE_ATTRIBUTES
              value: "service.namespace={{ $root.Release.Namespace }},deployment.track={{ .track }}"
            {{- with $v.otel.endpoint }}
            - name: OTEL_EXPORTER_OTLP_ENDPOINT
              value: {{ . | quote }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- with $v.probes.startup }}
          {{- if .enabled }}
          startupProbe:
            httpGet:
              path: {{ .path }}
              port: http
            initialDelaySeconds: {{ .initialDelaySeconds }}
            periodSeconds: {{ .periodSeconds }}
            timeoutSeconds: {{ .timeoutSeconds }}
            failureThreshold: {{ .failureThreshold }}
          {{- end }}
          {{- end }}
          {{- with $v.probes.liveness }}
          {{- if .enabled }}
          livenessProbe:
            httpGet:
              path: {{ .path }}
              port: http
            initialDelaySeconds: {{ .initialDelaySeconds }}
            periodSeconds: {{ .periodSeconds }}
            timeoutSeconds: {{ .timeoutSeconds }}
            failureThreshold: {{ .failureThreshold }}
          {{- end }}
          {{- end }}
          {{- with $v.probes.readiness }}
          {{- if .enabled }}
          readinessProbe:
            httpGet:
              path: {{ .path }}
              port: http
            initialDelaySeconds: {{ .initialDelaySeconds }}
            periodSeconds: {{ .periodSeconds }}
            timeoutSeconds: {{ .timeoutSeconds }}
            failureThreshold: {{ .failureThreshold }}
            successThreshold: {{ .successThreshold }}
          {{- end }}
          {{- end }}
          {{- if gt (int $v.termination.preStopSleepSeconds) 0 }}
          lifecycle:
            preStop:
              # Native sleep action: the image has no shell for `sh -c "sleep N"`.
              sleep:
                seconds: {{ $v.termination.preStopSleepSeconds }}
          {{- end }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $v.securityContext | nindent 12 }}
      {{- if $v.topologySpread.enabled }}
      topologySpreadConstraints:
        - maxSkew: {{ $v.topologySpread.maxSkew }}
          topologyKey: {{ $v.topologySpread.topologyKey }}
          whenUnsatisfiable: {{ $v.topologySpread.whenUnsatisfiable }}
          labelSelector:
            matchLabels:
              {{- include "selfheal-app.trackSelectorLabels" $sel | nindent 14 }}
          # Count only pods of the same ReplicaSet, so old pods of a rollout do not skew the spread.
          matchLabelKeys:
            - pod-template-hash
      {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
