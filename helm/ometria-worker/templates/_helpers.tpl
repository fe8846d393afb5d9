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
The worker's rules over setting names (which hold secrets, which librdkafka keys it owns),
as a dict. files/settings-rules.json is a copy of worker/settings_rules.py, which explains
them; a unit test keeps the two equal.
*/}}
{{- define "ometria-worker.rules" -}}
{{- $rules := .Files.Get "files/settings-rules.json" | fromJson }}
{{- if not (and $rules.secret $rules.public $rules.reserved) }}
{{- fail "files/settings-rules.json is missing from the chart or broken: it cannot tell secret settings apart" }}
{{- end }}
{{- toJson $rules }}
{{- end }}

{{/*
"true" when a setting, variable or key holds a secret by the worker's rule. Takes a dict:
rules (from "ometria-worker.rules") and name. The name is normalised as the worker does:
lower case, "_" and "-" as ".".
*/}}
{{- define "ometria-worker.isSecret" -}}
{{- $name := .name | lower | replace "_" "." | replace "-" "." }}
{{- if and (regexMatch .rules.secret $name) (not (regexMatch .rules.public $name)) }}true{{ end }}
{{- end }}

{{/* The variable that passes the librdkafka setting in the context through. */}}
{{- define "ometria-worker.kafkaVariable" -}}
KAFKA_CONFIG_{{ . | replace "." "_" | upper }}
{{- end }}

{{/*
The kafka.config entries that hold a secret (they go to the chart's Secret) or not (the
ConfigMap), as a dict of variable name to value; the context is a dict: root (the chart's
context) and secret (true or false).
*/}}
{{- define "ometria-worker.kafkaConfig" -}}
{{- $rules := include "ometria-worker.rules" .root | fromJson }}
{{- $out := dict }}
{{- range $key, $value := .root.Values.kafka.config }}
{{- $isSecret := include "ometria-worker.isSecret" (dict "rules" $rules "name" $key) | empty | not }}
{{- if eq $isSecret $.secret }}
{{- $_ := set $out (include "ometria-worker.kafkaVariable" $key) (include "ometria-worker.scalar" $value) }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/*
The chart's Secret data as a dict, only non-empty values: an empty KAFKA_CONFIG_SASL_USERNAME
would reach librdkafka as a real (empty) setting. Secret kafka.config entries come here,
never to the ConfigMap.
*/}}
{{- define "ometria-worker.secretData" -}}
{{- $data := dict }}
{{- with .Values.ometria.key }}{{ $_ := set $data "OMETRIA_KEY" . }}{{ end }}
{{- with .Values.ometria.secret }}{{ $_ := set $data "OMETRIA_SECRET" . }}{{ end }}
{{- with .Values.kafka.sasl.username }}{{ $_ := set $data "KAFKA_CONFIG_SASL_USERNAME" . }}{{ end }}
{{- with .Values.kafka.sasl.password }}{{ $_ := set $data "KAFKA_CONFIG_SASL_PASSWORD" . }}{{ end }}
{{- with .Values.schemaRegistry.username }}{{ $_ := set $data "SCHEMA_REGISTRY_USERNAME" . }}{{ end }}
{{- with .Values.schemaRegistry.password }}{{ $_ := set $data "SCHEMA_REGISTRY_PASSWORD" . }}{{ end }}
{{- range $name, $value := fromYaml (include "ometria-worker.kafkaConfig" (dict "root" . "secret" true)) }}
{{- if ne (toString $value) "" }}{{ $_ := set $data $name $value }}{{ end }}
{{- end }}
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
{{- $registry := $v.schemaRegistry }}
{{- if ne (empty $registry.username) (empty $registry.password) }}
{{- fail "schemaRegistry.username and schemaRegistry.password go together: set both or neither" }}
{{- end }}
{{- if and $registry.existingSecret (or $registry.username $registry.password) }}
{{- fail "schemaRegistry.existingSecret is set: put the registry credentials in that Secret, not in schemaRegistry.username/password" }}
{{- end }}
{{- if and $v.existingSecret (or $registry.username $registry.password) }}
{{- fail "existingSecret is set: put SCHEMA_REGISTRY_USERNAME/PASSWORD in that Secret (or use schemaRegistry.existingSecret), not in schemaRegistry.username/password" }}
{{- end }}
{{- if and (not $registry.url) (or $registry.username $registry.password $registry.existingSecret $registry.idPointer) }}
{{- fail "schemaRegistry settings are set but schemaRegistry.url is empty" }}
{{- end }}
{{- if regexMatch "^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@" $v.ometria.baseUrl }}
{{- fail "ometria.baseUrl must not hold credentials (user:password@host): put them in ometria.key and ometria.secret, or existingSecret" }}
{{- end }}
{{- /* The worker's own rules (files/settings-rules.json): the chart refuses what it refuses. */}}
{{- $rules := include "ometria-worker.rules" . | fromJson }}
{{- range $key, $value := $v.kafka.config }}
{{- $variable := include "ometria-worker.kafkaVariable" $key }}
{{- if has $key $rules.reserved }}
{{- fail (printf "kafka.config.%s is set by the worker itself and cannot be passed through" $key) }}
{{- end }}
{{- /* An empty secret is no secret: like kafka.sasl.password "", it sets nothing. */}}
{{- if and $v.existingSecret (ne (toString $value) "") (include "ometria-worker.isSecret" (dict "rules" $rules "name" $key)) }}
{{- fail (printf "kafka.config.%s is a secret and existingSecret is set: put %s in that Secret instead" $key $variable) }}
{{- end }}
{{- if or (and (eq $key "sasl.username") $v.kafka.sasl.username) (and (eq $key "sasl.password") $v.kafka.sasl.password) }}
{{- fail (printf "kafka.config.%s and kafka.%s both set %s: keep one" $key $key $variable) }}
{{- end }}
{{- end }}
{{- range $v.extraEnv }}
{{- $name := .name | default "" }}
{{- if and (hasKey . "value") (include "ometria-worker.isSecret" (dict "rules" $rules "name" $name)) }}
{{- fail (printf "extraEnv %s holds a secret as a plain value, which anyone reading the Deployment sees: use valueFrom.secretKeyRef, or kafka.config (secrets go to the chart's Secret), or existingSecret" $name) }}
{{- end }}
{{- if hasPrefix "KAFKA_CONFIG_" $name }}
{{- $key := trimPrefix "KAFKA_CONFIG_" $name | lower | replace "_" "." }}
{{- if has $key $rules.reserved }}
{{- fail (printf "extraEnv %s sets %s, which the worker sets itself (the pod would not start)" $name $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- $volumes := list "tmp" }}
{{- if $v.schemas.files }}{{ $volumes = append $volumes "schemas" }}{{ end }}
{{- range $v.extraVolumes }}
{{- if has .name $volumes }}
{{- fail (printf "extraVolumes: the name %q is taken (the chart's volumes: tmp, schemas)" .name) }}
{{- end }}
{{- $volumes = append $volumes .name }}
{{- end }}
{{- range $v.extraVolumeMounts }}
{{- if not (has .name $volumes) }}
{{- fail (printf "extraVolumeMounts: %q mounts no volume: add it to extraVolumes" .name) }}
{{- end }}
{{- if or (eq (clean .mountPath) "/tmp") (and $v.schemas.files (eq (clean .mountPath) (clean $v.schemas.mountPath))) }}
{{- fail (printf "extraVolumeMounts: %s is already mounted by the chart" .mountPath) }}
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
