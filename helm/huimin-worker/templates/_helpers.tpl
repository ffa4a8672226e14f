{{/*
Chart name, truncated to the 63 characters a DNS label allows.
*/}}
{{- define "huimin-worker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: <release>-<chart>, or the release name when it already contains the
chart name. Truncated to 63 characters.
*/}}
{{- define "huimin-worker.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "huimin-worker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource.
*/}}
{{- define "huimin-worker.labels" -}}
helm.sh/chart: {{ include "huimin-worker.chart" . }}
{{ include "huimin-worker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: huimin
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels of the worker (the simulator adds its own component label).
*/}}
{{- define "huimin-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "huimin-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount the pods run as.
*/}}
{{- define "huimin-worker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "huimin-worker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The Secret holding the HUIMIN_* secret settings: existingSecret, or the chart's own.
*/}}
{{- define "huimin-worker.secretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else }}
{{- include "huimin-worker.fullname" . }}
{{- end }}
{{- end }}

{{/*
The container image reference: repository@digest, or repository:tag (default appVersion).
*/}}
{{- define "huimin-worker.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The simulator's resource name and its in-cluster platform URL.
*/}}
{{- define "huimin-worker.simulatorName" -}}
{{- printf "%s-simulator" (include "huimin-worker.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The inbound gateway's resource name.
*/}}
{{- define "huimin-worker.gatewayName" -}}
{{- printf "%s-gateway" (include "huimin-worker.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "huimin-worker.platformUrl" -}}
{{- if .Values.config.platformUrl }}
{{- .Values.config.platformUrl }}
{{- else if .Values.simulator.enabled }}
{{- printf "http://%s.%s.svc:%d/api" (include "huimin-worker.simulatorName" .) .Release.Namespace (int .Values.simulator.port) }}
{{- end }}
{{- end }}

{{/*
The longest the worker may need after SIGTERM: the drain deadline, plus a platform call begun
just before it (HUIMIN_CALL_DEADLINE_S + HUIMIN_CONNECT_TIMEOUT_S), plus 5 s to close the ledger
and the connection. A call cut by SIGKILL leaves an outcome the sweeper must reconcile.
*/}}
{{- define "huimin-worker.minimumGracePeriodSeconds" -}}
{{- $c := .Values.config }}
{{- add (int (ceil (addf (float64 $c.shutdownDeadlineS) (float64 $c.callDeadlineS) (float64 $c.connectTimeoutS)))) 5 }}
{{- end }}

{{/*
The pod's termination grace period: terminationGracePeriodSeconds, or the minimum above plus
10 s. An explicit value below the minimum fails the render.
*/}}
{{- define "huimin-worker.terminationGracePeriodSeconds" -}}
{{- $minimum := int (include "huimin-worker.minimumGracePeriodSeconds" .) }}
{{- if .Values.terminationGracePeriodSeconds }}
{{- $grace := int .Values.terminationGracePeriodSeconds }}
{{- if lt $grace $minimum }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least %d = config.shutdownDeadlineS (%v) + config.callDeadlineS (%v) + config.connectTimeoutS (%v) + 5: Kubernetes would kill the worker in the middle of a platform call while it drains" $grace $minimum .Values.config.shutdownDeadlineS .Values.config.callDeadlineS .Values.config.connectTimeoutS) }}
{{- end }}
{{- $grace }}
{{- else }}
{{- add $minimum 10 }}
{{- end }}
{{- end }}

{{/*
The most worker pods that can run at once: replicaCount, or the autoscaler's maximum.
*/}}
{{- define "huimin-worker.maxReplicas" -}}
{{- if .Values.autoscaling.keda.enabled }}
{{- max (int .Values.replicaCount) (int .Values.autoscaling.keda.maxReplicaCount) }}
{{- else if .Values.autoscaling.hpa.enabled }}
{{- max (int .Values.replicaCount) (int .Values.autoscaling.hpa.maxReplicas) }}
{{- else }}
{{- int .Values.replicaCount }}
{{- end }}
{{- end }}

{{/*
Whether the autoscaler owns the Deployment's replica count.
*/}}
{{- define "huimin-worker.autoscaled" -}}
{{- if or .Values.autoscaling.keda.enabled .Values.autoscaling.hpa.enabled }}true{{ end }}
{{- end }}

{{/*
Refuse settings that cannot work. Included by the Deployment template.
*/}}
{{- define "huimin-worker.validate" -}}
{{- if and .Values.autoscaling.keda.enabled .Values.autoscaling.hpa.enabled }}
{{- fail "autoscaling.keda.enabled and autoscaling.hpa.enabled together: two autoscalers would fight over the replica count (KEDA makes its own HPA); enable one" }}
{{- end }}
{{- $replicas := int (include "huimin-worker.maxReplicas" .) }}
{{- if and (gt $replicas 1) (not .Values.existingSecret) }}
{{- $ledger := .Values.secrets.ledgerUrl | default "sqlite:///huimin-ledger.db" }}
{{- $scheme := lower (regexReplaceAll ":.*$" $ledger "") }}
{{- if not (has $scheme (list "postgresql" "postgres")) }}
{{- fail (printf "replicaCount (or the autoscaler's maximum)=%d needs a shared PostgreSQL ledger: set secrets.ledgerUrl=postgresql://user:password@host:5432/db (the ledger %q is SQLite, private to one pod)" $replicas (regexReplaceAll "://[^@/]*@" $ledger "://***@")) }}
{{- end }}
{{- end }}
{{- if and (gt $replicas 1) .Values.persistence.enabled }}
{{- fail (printf "replicaCount=%d with persistence.enabled=true: the volume holds a single-replica SQLite ledger; use a PostgreSQL ledger and set persistence.enabled=false" $replicas) }}
{{- end }}
{{- if and (gt $replicas 1) .Values.config.workerName }}
{{- fail (printf "replicaCount=%d with config.workerName=%q: every replica would hold leases under the same name; leave workerName empty (the pod name is used)" $replicas .Values.config.workerName) }}
{{- end }}
{{- if and .Values.gateway.enabled (not .Values.existingSecret) }}
{{- $ledger := .Values.secrets.ledgerUrl | default "sqlite:///huimin-ledger.db" }}
{{- if not (has (lower (regexReplaceAll ":.*$" $ledger "")) (list "postgresql" "postgres")) }}
{{- fail "gateway.enabled needs a shared PostgreSQL ledger (secrets.ledgerUrl=postgresql://...): the platformSeqIds it accepted must be remembered across restarts and replicas, and the worker's SQLite volume is private to the worker pod" }}
{{- end }}
{{- end }}
{{- if and .Values.gateway.ingress.enabled (not .Values.gateway.ingress.host) }}
{{- fail "gateway.ingress.enabled needs gateway.ingress.host (the host the platform calls)" }}
{{- end }}
{{- if and .Values.simulator.enabled (not .Values.existingSecret) (not .Values.secrets.platformSecret) }}
{{- fail "simulator.enabled needs secrets.platformSecret (any 16+ ASCII characters): the worker refuses the public sandbox key on a non-loopback platform URL" }}
{{- end }}
{{- end }}

{{/*
A checksum of the platform TLS Secret's content (read from the cluster at install/upgrade
time; empty under `helm template`) and of platformTls.rotation: the worker reads its TLS files
once, at start, so a changed certificate must roll the pods.
*/}}
{{- define "huimin-worker.platformTlsChecksum" -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace .Values.platformTls.secretName }}
{{- printf "%s|%s" (toJson (default dict (get (default dict $secret) "data"))) (toString .Values.platformTls.rotation) | sha256sum }}
{{- end }}
