{{/* The prefix of every object's name: guarded-rollouts, the name the operator itself uses. */}}
{{- define "guarded.fullname" -}}
{{- .Values.fullnameOverride | default "guarded-rollouts" | trunc 45 | trimSuffix "-" -}}
{{- end -}}

{{/* The labels the kustomize manifests put on every object (also the pods' selector). */}}
{{- define "guarded.selectorLabels" -}}
app.kubernetes.io/name: guarded-rollouts
app.kubernetes.io/component: operator
{{- end -}}

{{/* What Helm adds on top: which release and chart an object comes from. */}}
{{- define "guarded.releaseLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "guarded.labels" -}}
{{ include "guarded.selectorLabels" . }}
{{ include "guarded.releaseLabels" . }}
{{- end -}}

{{- define "guarded.webhookService" -}}
{{- printf "%s-webhook" (include "guarded.fullname" .) -}}
{{- end -}}

{{- define "guarded.webhookHost" -}}
{{- printf "%s.%s.svc" (include "guarded.webhookService" .) .Release.Namespace -}}
{{- end -}}

{{- define "guarded.webhookSecret" -}}
{{- .Values.webhook.secretName | default (printf "%s-webhook-tls" (include "guarded.fullname" .)) -}}
{{- end -}}

{{- define "guarded.image" -}}
{{- /* toString: a tag such as 20260301 comes from YAML or --set as a number */ -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) -}}
{{- end -}}

{{/* A map of labels or annotations, every key and value a quoted string: Kubernetes takes only strings,
and a value such as 1, true or 2026 comes from YAML or --set as a number or a boolean. */}}
{{- define "guarded.stringMap" -}}
{{- range $key, $value := . }}
{{ $key | toString | quote }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}
