{{/* Names, labels and derived settings shared by the smtp-gateway templates. */}}

{{- define "smtp-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "smtp-gateway.fullname" -}}
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

{{- define "smtp-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "smtp-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "smtp-gateway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "smtp-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: smtp-gateway
{{- end }}

{{- define "smtp-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "smtp-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "smtp-gateway.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{- define "smtp-gateway.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "smtp-gateway.fullname" .)) .Values.tls.secretName }}
{{- end }}

{{/* The chart's own Secret is made when there is something to put in it: secret.env (unless an
existing Secret replaces it) or redis.url (unless Redis has its own existing Secret). */}}
{{- define "smtp-gateway.createSecret" -}}
{{- $env := and (not .Values.secret.existingSecret) (gt (len (compact (values .Values.secret.env))) 0) }}
{{- $redis := and .Values.redis.url (not .Values.redis.existingSecret) }}
{{- if or $env $redis }}true{{- end }}
{{- end }}

{{/* The lowest port the container binds; below 1024 it needs the unprivileged-port sysctl. */}}
{{- define "smtp-gateway.lowestPort" -}}
{{- $ports := list (int .Values.containerPorts.smtp) (int .Values.containerPorts.http) }}
{{- if .Values.smtps.enabled }}
{{- $ports = append $ports (int .Values.containerPorts.smtps) }}
{{- end }}
{{- min (index $ports 0) (index $ports 1) (last $ports) }}
{{- end }}

{{- define "smtp-gateway.terminationGracePeriodSeconds" -}}
{{- add (int .Values.shutdown.preStopSleepSeconds) (int .Values.shutdown.drainTimeoutSeconds) (int .Values.shutdown.extraGraceSeconds) }}
{{- end }}

{{/* A value for a ConfigMap: a string, with whole numbers written without an exponent. */}}
{{- define "smtp-gateway.envValue" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}
{{- int64 . | toString | quote }}
{{- else }}
{{- toString . | quote }}
{{- end }}
{{- end }}

{{/* Refuse settings that belong elsewhere, with the fix in the message. */}}
{{- define "smtp-gateway.validate" -}}
{{- $managed := dict "SMTP_PORT" "containerPorts.smtp" "SMTPS_PORT" "smtps.enabled and containerPorts.smtps" "HTTP_PORT" "containerPorts.http" "SMTP_HOSTNAME" "hostname" "DATA_DIR" "dataVolume" "TLS_CERT_PATH" "tls" "TLS_KEY_PATH" "tls" "SHUTDOWN_DRAIN_TIMEOUT" "shutdown.drainTimeoutSeconds" "TRUSTED_PROXIES" "service.smtp.proxyProtocol.trustedProxies" "ADMIN_TOKEN" "secret.env or secret.existingSecret" "REDIS_URL" "redis.url or redis.existingSecret" }}
{{- range $key, $_ := .Values.config }}
{{- if hasKey $managed $key }}
{{- fail (printf "config.%s is set by the chart: use %s instead" $key (get $managed $key)) }}
{{- end }}
{{- end }}
{{- if not .Values.hostname }}
{{- fail "hostname is required: the SMTP host name clients connect to (e.g. smtp.example.com)" }}
{{- end }}
{{- if and .Values.service.smtp.proxyProtocol.enabled (empty .Values.service.smtp.proxyProtocol.trustedProxies) }}
{{- fail "service.smtp.proxyProtocol.enabled needs service.smtp.proxyProtocol.trustedProxies: the load balancer's (or nodes') CIDRs allowed to send a PROXY header" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (ne (toString .Values.podDisruptionBudget.minAvailable) "") (ne (toString .Values.podDisruptionBudget.maxUnavailable) "") }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both" }}
{{- end }}
{{- if lt (int .Values.shutdown.drainTimeoutSeconds) 1 }}
{{- fail "shutdown.drainTimeoutSeconds must be at least 1" }}
{{- end }}
{{- end }}
