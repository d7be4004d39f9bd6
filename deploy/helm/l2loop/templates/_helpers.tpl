{{/* The release's full name, the prefix of every object's name. */}}
{{- define "l2loop.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels that select one component's pods: (dict "root" $ "component" NAME). */}}
{{- define "l2loop.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every object's labels: (dict "root" $ "component" NAME). */}}
{{- define "l2loop.labels" -}}
{{ include "l2loop.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "l2loop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "l2loop.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "l2loop.secretName" -}}
{{- default (include "l2loop.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{/* host:port,host:port, for KEDA, from L2LOOP_KAFKA_BROKER's form (kafka:// accepted). */}}
{{- define "l2loop.bootstrapServers" -}}
{{- $broker := required "kafka.broker is required (host:port[,host:port...])" .Values.kafka.broker -}}
{{- $hosts := list -}}
{{- range splitList "," $broker -}}
{{- $hosts = append $hosts (trimPrefix "kafka://" (trim .)) -}}
{{- end -}}
{{- join "," $hosts -}}
{{- end -}}

{{/* The score agent's consumer group: consumer_group(settings, "score") in streams/consumer.py. */}}
{{- define "l2loop.scoreConsumerGroup" -}}
{{- printf "%s.score" .Values.appId -}}
{{- end -}}

{{/* The most scorers worth running: one per partition of scan-events. */}}
{{- define "l2loop.scorerMaxReplicas" -}}
{{- min .Values.scorer.autoscaling.maxReplicas .Values.partitions -}}
{{- end -}}

{{/*
A Deployment of one component: (dict "root" $ "component" NAME "values" VALUES "command" LIST
"env" LIST "port" NUMBER "ready" PATH "live" PATH "replicas" NUMBER "strategy" NAME); without
"port", no probes; without "replicas", none set (an autoscaler sets them).
*/}}
{{- define "l2loop.deployment" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $labels := dict "root" $root "component" .component -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "l2loop.fullname" $root }}-{{ .component }}
  labels:
    {{- include "l2loop.labels" $labels | nindent 4 }}
spec:
  {{- if not (kindIs "invalid" .replicas) }}
  replicas: {{ .replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: {{ .strategy | default "RollingUpdate" }}
  selector:
    matchLabels:
      {{- include "l2loop.selectorLabels" $labels | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "l2loop.labels" $labels | nindent 8 }}
      annotations:
        # A changed setting rolls the pods: they read their environment once, at start.
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
    spec:
      serviceAccountName: {{ include "l2loop.serviceAccountName" $root }}
      # The processes never talk to the Kubernetes API.
      automountServiceAccountToken: false
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $v.podSecurityContext | nindent 8 }}
      # On SIGTERM a worker stops consuming, lets its batches in flight finish and commits
      # them, and exits within L2LOOP_SHUTDOWN_TIMEOUT_S whatever hangs (streams/app.py,
      # Worker): the grace period is longer, so Kubernetes never SIGKILLs a drain in progress.
      terminationGracePeriodSeconds: {{ add (int $v.shutdownTimeoutSeconds) (int $v.terminationGraceMarginSeconds) }}
      containers:
        - name: {{ .component }}
          image: "{{ $v.image.repository }}:{{ $v.image.tag | default $root.Chart.AppVersion }}"
          imagePullPolicy: {{ $v.image.pullPolicy }}
          command:
            {{- toYaml .command | nindent 12 }}
          envFrom:
            - configMapRef:
                name: {{ include "l2loop.fullname" $root }}
            - secretRef:
                name: {{ include "l2loop.secretName" $root }}
          env:
            {{- with .env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            # numba caches the fast model's compiled featuriser; the image's files are
            # read-only, so it caches into the scratch volume.
            - name: NUMBA_CACHE_DIR
              value: /tmp/numba
            - name: HOME
              value: /tmp
          {{- if .port }}
          ports:
            - name: http
              containerPort: {{ .port }}
              protocol: TCP
          # Before it serves at all a process loads its model and waits for Kafka and Redis
          # (at most L2LOOP_STARTUP_TIMEOUT_S, then it exits to be restarted): the startup
          # probe allows that, and only then does liveness count. A worker's group joins come
          # after, on the readiness probe.
          startupProbe:
            httpGet: {path: {{ .live }}, port: http}
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: {{ div (add (int $v.startupTimeoutSeconds) (int $v.startupMarginSeconds)) 5 }}
          # Liveness answers 200 through an outage of Kafka or Redis (degraded, on a worker's
          # /health): the process waits it out, and a restart would not help.
          livenessProbe:
            httpGet: {path: {{ .live }}, port: http}
            periodSeconds: 10
            timeoutSeconds: 5
            failureThreshold: 6
          readinessProbe:
            httpGet: {path: {{ .ready }}, port: http}
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 2
          {{- end }}
          resources:
            {{- toYaml .values.resources | nindent 12 }}
          securityContext:
            {{- toYaml $v.securityContext | nindent 12 }}
          volumeMounts:
            - name: data
              mountPath: /var/lib/l2loop
            - name: tmp
              mountPath: /tmp
      volumes:
        # Scratch space only (L2LOOP_DATA_DIR): shared state lives on L2LOOP_STORE_URL.
        - name: data
          emptyDir: {}
        - name: tmp
          emptyDir: {}
      {{- with .values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}
