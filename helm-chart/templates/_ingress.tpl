{{/* One Ingress for the chart's host and path ({root, name, backend, annotations}); the stable and canary Ingresses differ only in name, backend and annotations. */}}
{{- define "selfheal-app.ingress" -}}
{{- $i := .root.Values.ingress -}}
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {{ .name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "selfheal-app.labels" .root | nindent 4 }}
    {{- with .track }}
    track: {{ . }}
    {{- end }}
  {{- with .annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- with $i.className }}
  ingressClassName: {{ . }}
  {{- end }}
  {{- if $i.tls.enabled }}
  tls:
    - hosts:
        - {{ $i.host | quote }}
      secretName: {{ $i.tls.secretName }}
  {{- end }}
  rules:
    - host: {{ $i.host | quote }}
      http:
        paths:
          - path: {{ $i.path }}
            pathType: {{ $i.pathType }}
            backend:
              service:
                name: {{ .backend }}
                port:
                  name: http
{{- end }}
