# syntax=docker/dockerfile:1
# gatekeeper container image: `docker build -t gatekeeper:0.1.0 .` (docker compose builds it too).
#
# Stage 1 builds the gatekeeper wheel and a wheel for every dependency; stage 2 installs them from
# that folder only (no index), so the runtime image has no build tools and no pip cache.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gatekeeper ./gatekeeper
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GATEKEEPER_CONFIG=/etc/gatekeeper/gatekeeper.yaml
# SECURITY: a fixed, unprivileged uid/gid (k8s runAsUser and compose volumes rely on 10001).
RUN groupadd --system --gid 10001 gatekeeper \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/gatekeeper --shell /usr/sbin/nologin gatekeeper
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels gatekeeper
COPY policies/ /etc/gatekeeper/policies/
COPY deploy/config/gatekeeper.yaml /etc/gatekeeper/gatekeeper.yaml
# Keys and entities are mounted at run time (never baked in); the audit folder is a volume that
# starts out owned by the service user.
RUN mkdir -p /etc/gatekeeper/keys /etc/gatekeeper/entities /var/lib/gatekeeper/audit \
 && chown -R 10001:10001 /var/lib/gatekeeper
VOLUME ["/var/lib/gatekeeper/audit"]
WORKDIR /var/lib/gatekeeper
USER 10001:10001
# 8080: the proxy (listen.port); 9090: admin (admin.port: healthz, readyz, metrics, reload).
EXPOSE 8080 9090
# slim has no curl; the standard library does the probe.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9090/healthz', timeout=2).status == 200 else 1)"]
# SIGTERM drains in-flight requests (limits.drain_timeout_s); SIGHUP reloads policy, entities, keys.
STOPSIGNAL SIGTERM
ENTRYPOINT ["gatekeeper"]
CMD ["serve", "--config", "/etc/gatekeeper/gatekeeper.yaml"]
