{{/* Names and labels shared by every template. */}}

{{- define "bidfilter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name, at most 63 characters (a DNS label). */}}
{{- define "bidfilter.fullname" -}}
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

{{- define "bidfilter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: never change them after a first install (a Deployment's selector is
immutable). */}}
{{- define "bidfilter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bidfilter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "bidfilter.labels" -}}
helm.sh/chart: {{ include "bidfilter.chart" . }}
{{ include "bidfilter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: server
{{- end }}

{{- define "bidfilter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bidfilter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Checks that stop a broken release at render time rather than in the cluster. */}}
{{- define "bidfilter.validate" -}}
{{- if not .Values.config.store }}
{{- fail "config.store is required: the model store bidfilter serves from, e.g. s3://my-bucket/bidfilter/models" }}
{{- end }}
{{- range $key := list "host" "port" "metrics_port" "cache_dir" }}
{{- if hasKey $.Values.config $key }}
{{- fail (printf "config.%s is set by the chart (from ports / cache); remove it from config" $key) }}
{{- end }}
{{- end }}
{{- /* bidfilter's own default when config.drain_s is left out */}}
{{- $drain := 10.0 }}
{{- if hasKey .Values.config "drain_s" }}
{{- $drain = float64 .Values.config.drain_s }}
{{- end }}
{{- $before := addf (float64 .Values.shutdown.preStopSleepSeconds) $drain }}
{{- if le (float64 .Values.shutdown.terminationGracePeriodSeconds) $before }}
{{- fail (printf "shutdown.terminationGracePeriodSeconds (%v) must exceed shutdown.preStopSleepSeconds + config.drain_s (%v), or pods are killed while draining" .Values.shutdown.terminationGracePeriodSeconds $before) }}
{{- end }}
{{- end }}
