{{/* Every object's labels: the kustomize install's, and Helm's own. */}}
{{- define "auditwatch.labels" -}}
app.kubernetes.io/name: auditwatch
app.kubernetes.io/component: operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* The arguments every mode passes after its own: the write budget, metrics, namespaces, extras. */}}
{{- define "auditwatch.commonArgs" -}}
- --write-qps={{ .Values.writeBudget.qps }}
- --write-burst={{ .Values.writeBudget.burst }}
- --metrics-listen={{ .Values.metricsListen }}
{{- range .Values.detectionNamespaces }}
- --detection-namespace={{ . }}
{{- end }}
{{- range .Values.allowPaths }}
- --allow-path={{ . }}
{{- end }}
{{- if .Values.alertsSecret }}
- --alerts=/etc/auditwatch/alerts/alerts.yaml
{{- end }}
{{- if .Values.reports }}
- --reports
{{- end }}
{{- range .Values.extraArgs }}
- {{ . }}
{{- end }}
{{- end }}

{{/* The webhook server's arguments (modes nodes and webhook). */}}
{{- define "auditwatch.webhookArgs" -}}
- --webhook-tls-cert=/etc/auditwatch/webhook-tls/tls.crt
- --webhook-tls-key=/etc/auditwatch/webhook-tls/tls.key
- --webhook-client-ca=/etc/auditwatch/webhook-client-ca/ca.crt
{{- range .Values.webhook.clientNames }}
- --webhook-client-name={{ . }}
{{- end }}
- --webhook-spool=/var/spool/auditwatch
{{- end }}

{{/* The Pod's name, uid and namespace: its shard's Lease goes with it. */}}
{{- define "auditwatch.podEnv" -}}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_UID
  valueFrom:
    fieldRef:
      fieldPath: metadata.uid
{{- end }}

{{/* The container's image, probe, resources and security context: the same in every mode. */}}
{{- define "auditwatch.containerCommon" -}}
image: {{ printf "%s:%s" .Values.image.repository .Values.image.tag }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
livenessProbe:
  httpGet:
    path: /healthz
    port: health
  periodSeconds: 10
  failureThreshold: 3
resources:
  {{- toYaml .Values.resources | nindent 2 }}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
{{- end }}

{{/* The pod template's metadata: its selector label, and Prometheus's scrape annotations when asked. */}}
{{- define "auditwatch.podMetadata" -}}
labels:
  app.kubernetes.io/name: auditwatch
  {{- if has .Values.mode (list "aks" "aks-eventhubs") }}
  azure.workload.identity/use: "true"
  {{- end }}
{{- if .Values.monitoring.scrapeAnnotations }}
annotations:
  prometheus.io/scrape: "true"
  prometheus.io/port: {{ splitList ":" .Values.metricsListen | last | quote }}
  prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* The alerts Secret's mount and volume (alertsSecret). */}}
{{- define "auditwatch.alertsMount" -}}
{{- if .Values.alertsSecret }}
- name: alerts
  mountPath: /etc/auditwatch/alerts
  readOnly: true
{{- end }}
{{- end }}

{{- define "auditwatch.alertsVolume" -}}
{{- if .Values.alertsSecret }}
- name: alerts
  secret:
    secretName: {{ .Values.alertsSecret }}
    defaultMode: 0400
{{- end }}
{{- end }}

{{/* The webhook server's ports and Secret mounts. */}}
{{- define "auditwatch.webhookMounts" -}}
- name: tmp
  mountPath: /tmp
- name: webhook-spool
  mountPath: /var/spool/auditwatch
- name: webhook-tls
  mountPath: /etc/auditwatch/webhook-tls
  readOnly: true
- name: webhook-client-ca
  mountPath: /etc/auditwatch/webhook-client-ca
  readOnly: true
{{- end }}

{{- define "auditwatch.webhookVolumes" -}}
- name: tmp
  emptyDir: {}
- name: webhook-tls
  secret:
    secretName: {{ .Values.webhook.tlsSecret }}
- name: webhook-client-ca
  secret:
    secretName: {{ .Values.webhook.clientCASecret }}
{{- end }}

{{/* Scheduling: the values given, else the mode's defaults passed in. */}}
{{- define "auditwatch.scheduling" -}}
{{- with (.Values.nodeSelector | default .nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (.Values.tolerations | default .tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
