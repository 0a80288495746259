{{- define "otelbee.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "otelbee.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "otelbee.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "otelbee.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "otelbee.selectorLabels" -}}
app.kubernetes.io/name: {{ include "otelbee.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "otelbee.labels" -}}
{{ include "otelbee.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "otelbee.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "otelbee.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The capabilities to add: the values' list, plus SYS_ADMIN and
SYS_RESOURCE on legacy kernels only. */}}
{{- define "otelbee.capabilities" -}}
{{- $caps := .Values.capabilities -}}
{{- if .Values.legacyKernelSysAdmin -}}
{{- $caps = concat $caps (list "SYS_ADMIN" "SYS_RESOURCE") | uniq -}}
{{- end -}}
{{- toYaml $caps -}}
{{- end -}}

{{/* GOMEMLIMIT in bytes: goMemLimitPercent of resources.limits.memory
(a quantity with a binary or decimal suffix, or plain bytes). */}}
{{- define "otelbee.goMemLimit" -}}
{{- $q := toString .Values.resources.limits.memory -}}
{{- if not (regexMatch "^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$" $q) -}}
{{- fail (printf "resources.limits.memory %q: want an integer with an optional Ki, Mi, Gi, Ti, k, M, G or T suffix" $q) -}}
{{- end -}}
{{- $n := regexFind "^[0-9]+" $q | atoi -}}
{{- $unit := trimPrefix (regexFind "^[0-9]+" $q) $q -}}
{{- $mult := get (dict "" 1 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000) $unit -}}
{{- $pct := int .Values.goMemLimitPercent -}}
{{- if or (lt $pct 1) (gt $pct 100) -}}
{{- fail (printf "goMemLimitPercent %d: want 1-100" $pct) -}}
{{- end -}}
{{- div (mul $n $mult $pct) 100 -}}
{{- end -}}
