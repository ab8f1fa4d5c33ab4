{{/*
The relay's name: every object is called this, and clients look for it.
*/}}
{{- define "devnet-relay.name" -}}devnet-relay{{- end }}

{{/*
The tunnel protocol of this release's relay (devnet_proto::PROTOCOL_VERSION):
a client refuses a relay on another one.
*/}}
{{- define "devnet-relay.protocol" -}}1{{- end }}

{{/*
The labels of every object; clients read the version and protocol.
*/}}
{{- define "devnet-relay.labels" -}}
app.kubernetes.io/name: {{ include "devnet-relay.name" . }}
app.kubernetes.io/managed-by: devnet
devnet.dev/version: {{ .Chart.AppVersion | quote }}
devnet.dev/protocol: {{ include "devnet-relay.protocol" . | quote }}
{{- end }}

{{- define "devnet-relay.selector" -}}
app.kubernetes.io/name: {{ include "devnet-relay.name" . }}
{{- end }}

{{- define "devnet-relay.image" -}}
{{- .Values.image | default (printf "ghcr.io/devnet-dev/devnet-relay:%s" .Chart.AppVersion) -}}
{{- end }}

{{/*
What values.schema.json cannot say clearly: the same rule `devnet relay
manifests` applies (and discovery), nothing the relay may dial is wider than
a cluster network.
*/}}
{{- define "devnet-relay.checkCIDRs" -}}
{{- range .Values.allowedCIDRs }}
{{- $parts := splitList "/" . }}
{{- $addr := first $parts }}
{{- $prefix := last $parts | atoi }}
{{- $v6 := contains ":" $addr }}
{{- $why := "" }}
{{- if eq $prefix 0 }}
{{- $why = "a default route" }}
{{- else if or (hasPrefix "127." $addr) (eq $addr "::1") }}
{{- $why = "loopback" }}
{{- else if or (eq $addr "0.0.0.0") (eq $addr "::") (lt $prefix (ternary 16 8 $v6)) }}
{{- $why = "a range far wider than any cluster network" }}
{{- end }}
{{- if $why }}
{{- fail (printf "allowedCIDRs: %s is %s: the relay would dial far beyond the cluster; name the cluster's pod and service CIDRs" . $why) }}
{{- end }}
{{- end }}
{{- end }}
