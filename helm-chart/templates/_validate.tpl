{{/* Checks values the schema cannot express; fails the render with the fix instead of deploying something broken. */}}
{{- define "selfheal-app.validate" -}}
{{- $v := .Values -}}
{{- $drain := add $v.termination.preStopSleepSeconds $v.app.shutdownDelaySecs $v.app.shutdownTimeoutSecs 3 -}}
{{- if lt (int $v.termination.gracePeriodSeconds) (int $drain) }}
{{- fail (printf "termination.gracePeriodSeconds (%v) must be at least termination.preStopSleepSeconds + app.shutdownDelaySecs + app.shutdownTimeoutSecs + 3 s span flush = %v, or the kubelet kills the app mid-drain" $v.termination.gracePeriodSeconds $drain) }}
{{- end }}
{{- if and $v.autoscaling.enabled (gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas (%v) is above autoscaling.maxReplicas (%v)" $v.autoscaling.minReplicas $v.autoscaling.maxReplicas) }}
{{- end }}
{{- if and $v.canary.enabled $v.canary.ingress.enabled (not $v.ingress.enabled) }}
{{- fail "canary.ingress.enabled needs ingress.enabled: the nginx canary Ingress only works next to a stable Ingress with the same host and path" }}
{{- end }}
{{- if and $v.httpRoute.enabled (not $v.httpRoute.parentRefs) }}
{{- fail "httpRoute.enabled needs httpRoute.parentRefs: an HTTPRoute attached to no Gateway routes nothing" }}
{{- end }}
{{- if and $v.canary.ingress.enabled (gt (int $v.canary.ingress.weight) (int $v.canary.ingress.weightTotal)) }}
{{- fail (printf "canary.ingress.weight (%v) is above canary.ingress.weightTotal (%v)" $v.canary.ingress.weight $v.canary.ingress.weightTotal) }}
{{- end }}
{{- end }}
