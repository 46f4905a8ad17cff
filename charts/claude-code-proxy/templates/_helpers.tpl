{{- /* The operator's objects: "<release>-operator", or the release name when it already says operator. */ -}}
{{- define "ccp.fullname" -}}
{{- if contains "operator" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ccp.selectorLabels" -}}
app.kubernetes.io/name: claude-proxy-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ccp.labels" -}}
{{ include "ccp.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: claude-code-proxy
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "ccp.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "ccp.fullname" .) -}}
{{- end -}}

{{- define "ccp.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (.Values.operator.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "ccp.proxyImage" -}}
{{- printf "%s:%s" .Values.proxy.image.repository (.Values.proxy.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
