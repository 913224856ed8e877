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
{{- /* Chaos reachable from outside the cluster without a token: anyone could crash the app. */}}
{{- $exposed := list }}
{{- if $v.ingress.enabled }}{{ $exposed = append $exposed "ingress.enabled" }}{{ end }}
{{- if $v.httpRoute.enabled }}{{ $exposed = append $exposed "httpRoute.enabled" }}{{ end }}
{{- if eq $v.service.type "LoadBalancer" }}{{ $exposed = append $exposed "service.type=LoadBalancer" }}{{ end }}
{{- if and $v.chaos.enabled $exposed (not $v.chaos.token) (not $v.chaos.existingSecret) }}
{{- fail (printf "chaos.enabled with %s and no chaos.token: anyone who reaches the app from outside the cluster could POST /crash. Set chaos.token=<long random string> (or chaos.existingSecret=<Secret with the key \"token\">), or chaos.enabled=false, or expose it only inside the cluster" (join " and " $exposed)) }}
{{- end }}
{{- /*
A budget the stable track can never satisfy with a pod to spare blocks every eviction, so every
node drain hangs. Checked at the fewest pods the release runs (HPA minReplicas or replicaCount);
Kubernetes rounds a percentage up.
*/}}
{{- $p := $v.podDisruptionBudget }}
{{- $pods := int (include "selfheal-app.minReplicas" .) }}
{{- $source := ternary "autoscaling.minReplicas" "replicaCount" (and $v.autoscaling.enabled true) }}
{{- if and $p.enabled (gt $pods 1) }}
{{- $hasMax := and (not (kindIs "invalid" $p.maxUnavailable)) (ne (toString $p.maxUnavailable) "") }}
{{- if $hasMax }}
{{- if eq (int (trimSuffix "%" (toString $p.maxUnavailable))) 0 }}
{{- fail (printf "podDisruptionBudget.maxUnavailable %v lets no pod be evicted: every node drain (kubectl drain, node upgrades) would hang. Use maxUnavailable: 1 (or a percentage above 0%%)" $p.maxUnavailable) }}
{{- end }}
{{- else if not (kindIs "invalid" $p.minAvailable) }}
{{- $min := toString $p.minAvailable }}
{{- if hasSuffix "%" $min }}
{{- $pct := int (trimSuffix "%" $min) }}
{{- $need := div (add (mul $pct $pods) 99) 100 }}
{{- if ge (int $need) $pods }}
{{- fail (printf "podDisruptionBudget.minAvailable %s of %d pods (%s) is %d: Kubernetes rounds a percentage up, so no pod could be evicted and every node drain would hang (100%% always does). Use at most %d%% or an integer below %d, or maxUnavailable: 1" $min $pods $source (int $need) (div (mul (sub $pods 1) 100) $pods) $pods) }}
{{- end }}
{{- else if ge (int $min) $pods }}
{{- fail (printf "podDisruptionBudget.minAvailable (%s) is not below the %d pods the release runs at least (%s): no pod could be evicted, so every node drain (kubectl drain, node upgrades) would hang. Use at most %d, or maxUnavailable: 1" $min $pods $source (sub $pods 1)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
