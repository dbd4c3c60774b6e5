{{- define "pgwarden.fullname" -}}
{{- if contains "pgwarden" .Release.Name -}}{{ .Release.Name | trunc 50 | trimSuffix "-" }}{{- else -}}{{ printf "%s-pgwarden" .Release.Name | trunc 50 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "pgwarden.image" -}}
{{ include "pgwarden.imageRef" (dict "repository" .Values.image.repository "tag" (.Values.image.tag | default .Chart.AppVersion) "digest" .Values.image.digest) }}
{{- end -}}

{{- /* repository[:tag][@digest] from (dict "repository" "tag" "digest"). */ -}}
{{- define "pgwarden.imageRef" -}}
{{ .repository }}{{ with .tag }}:{{ . }}{{ end }}{{ with .digest }}@{{ . }}{{ end }}
{{- end -}}

{{- /* The bundled NATS's image: nats.image as a reference string, or {repository, tag, digest}. */ -}}
{{- define "pgwarden.natsImage" -}}
{{- $i := .Values.nats.image -}}
{{- if kindIs "string" $i }}{{ $i }}{{ else }}{{ include "pgwarden.imageRef" $i }}{{ end -}}
{{- end -}}

{{- define "pgwarden.labels" -}}
app.kubernetes.io/name: pgwarden
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "pgwarden.selector" -}}
app.kubernetes.io/name: pgwarden
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pgwarden.webhookService" -}}{{ include "pgwarden.fullname" . }}-webhook{{- end -}}
{{- define "pgwarden.tlsSecret" -}}{{ include "pgwarden.fullname" . }}-webhook-tls{{- end -}}
{{- define "pgwarden.lease" -}}{{ include "pgwarden.fullname" . }}-operator{{- end -}}

{{- define "pgwarden.natsUrl" -}}
{{- if .Values.audit.natsUrl -}}{{ .Values.audit.natsUrl }}{{- else if .Values.nats.deploy -}}nats://{{ include "pgwarden.fullname" . }}-nats.{{ .Release.Namespace }}.svc:4222{{- end -}}
{{- end -}}

{{- /* The NATS CA's Secret or ConfigMap, as `secret:<name>` / `configMap:<name>`; empty without one. */ -}}
{{- define "pgwarden.natsCa" -}}
{{- $ca := .Values.audit.natsCa | default dict -}}
{{- if or $ca.secret $ca.configMap -}}
{{- if and (include "pgwarden.bundledNats" .) (not (include "pgwarden.natsTlsSecret" .)) -}}
{{- fail "audit.natsCa with the bundled NATS needs nats.tls.secret: without it the bundled NATS speaks no TLS, so every sidecar would refuse it" -}}
{{- end -}}
{{- if $ca.secret }}secret:{{ $ca.secret }}{{ else }}configMap:{{ $ca.configMap }}{{ end -}}
{{- end -}}
{{- end -}}

{{- define "pgwarden.natsTlsSecret" -}}{{ (.Values.nats.tls | default dict).secret }}{{- end -}}

{{- define "pgwarden.bundledNats" -}}{{ if and .Values.nats.deploy (not .Values.audit.natsUrl) }}true{{ end }}{{- end -}}

{{/* The Secret holding the sidecars' NATS user: given, or generated with the bundled NATS. */}}
{{- define "pgwarden.auditCredentialsSource" -}}
{{- if .Values.audit.credentialsSecret -}}{{ .Values.audit.credentialsSecret }}{{- else if (include "pgwarden.bundledNats" .) -}}{{ include "pgwarden.fullname" . }}-nats-sidecar{{- end -}}
{{- end -}}

{{- define "pgwarden.collectorNatsCredentials" -}}
{{- if .Values.collector.natsCredentialsSecret -}}{{ .Values.collector.natsCredentialsSecret }}{{- else if (include "pgwarden.bundledNats" .) -}}{{ include "pgwarden.fullname" . }}-nats-collector{{- end -}}
{{- end -}}

{{/* A generated password that survives upgrades: reuse the Secret's value when it exists. */}}
{{- define "pgwarden.stablePassword" -}}
{{- $s := lookup "v1" "Secret" .ns .name -}}
{{- $key := .key | default "password" -}}
{{- if and $s $s.data (index $s.data $key) -}}{{ index $s.data $key | b64dec }}{{- else -}}{{ randAlphaNum 40 }}{{- end -}}
{{- end -}}

{{/* The Secret holding the collector's readers file: the user's collector.readersSecret, or the generated one. */}}
{{- define "pgwarden.collectorReadersSecret" -}}
{{- .Values.collector.readersSecret | default (printf "%s-collector-reader" (include "pgwarden.fullname" .)) -}}
{{- end -}}

{{/*
The Secret holding the web sessions' key when sign-ins are renewed: the user's collector.oidc.sessions.keySecret, or
the generated one; empty when they are not.
*/}}
{{- define "pgwarden.webSessionKeySecret" -}}
{{- $o := .Values.collector.oidc | default dict -}}
{{- $s := $o.sessions | default dict -}}
{{- if and $o.issuer $o.clientId $s.renew -}}
{{- $s.keySecret | default (printf "%s-collector-web-session" (include "pgwarden.fullname" .)) -}}
{{- end -}}
{{- end -}}

{{- define "pgwarden.restrictedContainer" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  readOnlyRootFilesystem: true
  allowPrivilegeEscalation: false
  capabilities: {drop: [ALL]}
  seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- /* Pod-spec fields every workload of the chart shares: pull secrets (a private mirror serves every image, NATS's
too), priority, placement. Called with (dict "root" $ "pod" <the component's values>). */ -}}
{{- define "pgwarden.podPlacement" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .pod.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

