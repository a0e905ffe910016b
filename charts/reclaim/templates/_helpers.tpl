{{/* Labels on every object: Reclaim's own, Helm's, and commonLabels. */}}
{{- define "reclaim.labels" -}}
app.kubernetes.io/part-of: reclaim
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* metadata.annotations of every object, when commonAnnotations has any. */}}
{{- define "reclaim.annotations" -}}
{{- with .Values.commonAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "reclaim.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The chosen cloud's settings (clouds.<cloud>). */}}
{{- define "reclaim.cloud" -}}
{{- toYaml (index .Values.clouds .Values.cloud) }}
{{- end }}

{{/* A binary's flags as arguments: `--kebab-case=value`, `--flag` for true, nothing for false. */}}
{{- define "reclaim.args" -}}
{{- range $name, $value := . }}
{{- if kindIs "bool" $value }}
{{- if $value }}
- --{{ kebabcase $name }}
{{- end }}
{{- else }}
- --{{ kebabcase $name }}={{ $value }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A file of manifests/base (linked into files/), one object per YAML document, with the release's
namespace in place of reclaim-system, and the chart's labels and annotations added.
*/}}
{{- define "reclaim.shared" -}}
{{- $root := .root }}
{{- $text := $root.Files.Get .file | replace "system:serviceaccount:reclaim-system:" (printf "system:serviceaccount:%s:" $root.Release.Namespace) }}
{{- $labels := include "reclaim.labels" $root | fromYaml }}
{{- range $doc := regexSplit "(?m)^---[ \\t]*$" $text -1 }}
{{- $object := fromYaml $doc }}
{{- if $object.kind }}
{{- $meta := $object.metadata }}
{{- $_ := set $meta "labels" (merge (dict) ($meta.labels | default dict) $labels) }}
{{- with $root.Values.commonAnnotations }}
{{- $_ := set $meta "annotations" (merge (dict) ($meta.annotations | default dict) .) }}
{{- end }}
{{- if $meta.namespace }}
{{- $_ := set $meta "namespace" $root.Release.Namespace }}
{{- end }}
---
{{ toYaml $object }}
{{- end }}
{{- end }}
{{- end }}
