{{/*
Names, labels and the chart's cross-field rules. Rules that one value can break alone
(types, enums, patterns) live in values.schema.json; rules that relate two values live
here, in "ometria-worker.validate", which every template includes so that no manifest
renders from values that would misbehave in the cluster.
*/}}

{{/* The chart name, overridable. */}}
{{- define "ometria-worker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects, at most 63 characters (a DNS label). The release
name alone when it already contains the chart name.
*/}}
{{- define "ometria-worker.fullname" -}}
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

{{/* name-version, for the helm.sh/chart label. */}}
{{- define "ometria-worker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that never change for a release: the Deployment's and Service's selector. */}}
{{- define "ometria-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ometria-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The standard labels of every object. */}}
{{- define "ometria-worker.labels" -}}
helm.sh/chart: {{ include "ometria-worker.chart" . }}
{{ include "ometria-worker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: worker
app.kubernetes.io/part-of: ometria-worker
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "ometria-worker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ometria-worker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository@digest when a digest is given, else repository:tag (default appVersion). */}}
{{- define "ometria-worker.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
A scalar value as the string a program expects. Helm reads numbers from values files as
float64, and toString would print 1000000 as "1e+06": whole numbers are printed as integers.
*/}}
{{- define "ometria-worker.scalar" -}}
{{- if and (kindIs "float64" .) (eq . (float64 (int64 .))) }}
{{- int64 . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/* The Secret the pods read: the user's existingSecret or the chart's own. */}}
{{- define "ometria-worker.secretName" -}}
{{- default (include "ometria-worker.fullname" .) .Values.existingSecret }}
{{- end }}

{{/*
The chart's Secret data as a dict, only non-empty values: an empty KAFKA_CONFIG_SASL_USERNAME
would reach librdkafka as a real (empty) setting.
*/}}
{{- define "ometria-worker.secretData" -}}
{{- $data := dict }}
{{- with .Values.ometria.key }}{{ $_ := set $data "OMETRIA_KEY" . }}{{ end }}
{{- with .Values.ometria.secret }}{{ $_ := set $data "OMETRIA_SECRET" . }}{{ end }}
{{- with .Values.kafka.sasl.username }}{{ $_ := set $data "KAFKA_CONFIG_SASL_USERNAME" . }}{{ end }}
{{- with .Values.kafka.sasl.password }}{{ $_ := set $data "KAFKA_CONFIG_SASL_PASSWORD" . }}{{ end }}
{{- toYaml $data }}
{{- end }}

{{/* "true" when the pods read a Secret at all (the user's, or the chart's with data). */}}
{{- define "ometria-worker.hasSecret" -}}
{{- if or .Values.existingSecret (fromYaml (include "ometria-worker.secretData" .)) }}true{{ end }}
{{- end }}

{{/* Seconds before SIGKILL: the user's value, or drain timeout + margin. */}}
{{- define "ometria-worker.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add (int .Values.worker.drainTimeoutSeconds) (int .Values.terminationMarginSeconds) }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* The topic KEDA measures: the explicit one, else the only consumed topic, else none. */}}
{{- define "ometria-worker.kedaTopic" -}}
{{- if .Values.autoscaling.keda.topic }}
{{- .Values.autoscaling.keda.topic }}
{{- else if eq (len .Values.kafka.topics) 1 }}
{{- first .Values.kafka.topics }}
{{- end }}
{{- end }}

{{/*
Cross-field rules. Each failure names the values to change; rendering stops at the first.
*/}}
{{- define "ometria-worker.validate" -}}
{{- $v := .Values }}
{{- if not $v.kafka.bootstrapServers }}
{{- fail "kafka.bootstrapServers is required (host:port[,host:port…])" }}
{{- end }}
{{- if not $v.kafka.topics }}
{{- fail "kafka.topics is required: a list of at least one topic" }}
{{- end }}
{{- if has $v.kafka.dlqTopic $v.kafka.topics }}
{{- fail (printf "kafka.dlqTopic %q is also in kafka.topics: dead letters would loop back" $v.kafka.dlqTopic) }}
{{- end }}
{{- if and (not $v.ometria.baseUrl) (not (and $v.ometria.domainKey $v.ometria.locationKey)) }}
{{- fail "ometria.domainKey and ometria.locationKey are required (or set ometria.baseUrl)" }}
{{- end }}
{{- if ne (empty $v.ometria.key) (empty $v.ometria.secret) }}
{{- fail "ometria.key and ometria.secret go together: set both or neither" }}
{{- end }}
{{- if and $v.existingSecret (or $v.ometria.key $v.ometria.secret $v.kafka.sasl.username $v.kafka.sasl.password) }}
{{- fail "existingSecret is set: put OMETRIA_KEY/OMETRIA_SECRET and the SASL credentials in that Secret, not in ometria.key/secret or kafka.sasl" }}
{{- end }}
{{- $secretKeys := list "sasl.username" "sasl.password" "sasl.oauthbearer.client.secret" "sasl.oauthbearer.config" "ssl.key.password" "ssl.key.pem" "ssl.keystore.password" }}
{{- $reservedKeys := list "bootstrap.servers" "group.id" "enable.auto.commit" "enable.auto.offset.store" }}
{{- range $key, $_ := $v.kafka.config }}
{{- if has $key $secretKeys }}
{{- fail (printf "kafka.config.%s is a secret and would land in a ConfigMap: use kafka.sasl or existingSecret (key KAFKA_CONFIG_%s)" $key (upper (replace "." "_" $key))) }}
{{- end }}
{{- if has $key $reservedKeys }}
{{- fail (printf "kafka.config.%s is set by the worker itself and cannot be passed through" $key) }}
{{- end }}
{{- end }}
{{- $grace := int (include "ometria-worker.terminationGracePeriodSeconds" .) }}
{{- if le $grace (int $v.worker.drainTimeoutSeconds) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than worker.drainTimeoutSeconds (%d): Kubernetes would kill the pod mid-drain" $grace (int $v.worker.drainTimeoutSeconds)) }}
{{- end }}
{{- $keda := $v.autoscaling.keda }}
{{- if not (kindIs "invalid" $keda.partitions) }}
{{- if gt (int $v.replicaCount) (int $keda.partitions) }}
{{- fail (printf "replicaCount (%d) is above autoscaling.keda.partitions (%d): the extra pods would get no partition" (int $v.replicaCount) (int $keda.partitions)) }}
{{- end }}
{{- end }}
{{- if $keda.enabled }}
{{- if kindIs "invalid" $keda.partitions }}
{{- fail "autoscaling.keda.partitions is required with KEDA: the partition count of the consumed topic caps maxReplicaCount" }}
{{- end }}
{{- if gt (int $keda.maxReplicaCount) (int $keda.partitions) }}
{{- fail (printf "autoscaling.keda.maxReplicaCount (%d) is above autoscaling.keda.partitions (%d): the extra pods would get no partition" (int $keda.maxReplicaCount) (int $keda.partitions)) }}
{{- end }}
{{- if gt (int $keda.minReplicaCount) (int $keda.maxReplicaCount) }}
{{- fail (printf "autoscaling.keda.minReplicaCount (%d) is above maxReplicaCount (%d)" (int $keda.minReplicaCount) (int $keda.maxReplicaCount)) }}
{{- end }}
{{- end }}
{{- end }}
