# syntax=docker/dockerfile:1
# alluxiojob: one image for the coordinator, the workers and the CLI.
#
#   docker build -t alluxiojob .
#   docker run --rm alluxiojob --help
#   docker compose up -d          (1 coordinator + 2 workers, see docker-compose.yml)
#
# BASE_IMAGE is any image with python3 (>= 3.11, with venv), groupadd and useradd.
# scripts/container-test builds one from Debian's packages, for hosts with no registry.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ALLUXIO_CONF_DIR=/etc/alluxio \
    HOME=/var/lib/alluxiojob \
    PATH=/opt/alluxiojob/bin:$PATH

# A dedicated non-root user. /var/lib/alluxiojob (work dir: job store, caches) and /data
# (UFS mount point) belong to it, so empty named volumes mounted there inherit that.
RUN groupadd --system --gid 10001 alluxio \
 && useradd --system --uid 10001 --gid alluxio --home-dir /var/lib/alluxiojob \
        --no-create-home --shell /usr/sbin/nologin alluxio \
 && install -d -o alluxio -g alluxio -m 0750 /var/lib/alluxiojob \
 && install -d -o alluxio -g alluxio -m 0755 /data \
 && install -d -m 0755 /etc/alluxio

# A virtual environment: Debian's python refuses system-wide pip installs (PEP 668).
COPY . /tmp/alluxiojob-src
RUN python3 -m venv /opt/alluxiojob \
 && /opt/alluxiojob/bin/pip install /tmp/alluxiojob-src \
 && rm -rf /tmp/alluxiojob-src \
 && alluxiojob --help >/dev/null

USER 10001:10001
WORKDIR /var/lib/alluxiojob

# 19999 coordinator REST, 29999 worker tasks (websocket), 30000 worker HTTP.
EXPOSE 19999 29999 30000

# curl is not in the image: python's urllib asks /healthz on whichever of the
# coordinator (19999) and worker web (30000) ports is open here. Services with other
# ports set ALLUXIOJOB_HEALTHZ_PORTS. Services must bind 0.0.0.0 or 127.0.0.1 for it
# to reach them (docker-compose.yml does).
ENV ALLUXIOJOB_HEALTHZ_PORTS="19999 30000"
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, socket, urllib.request as r; ports = [int(p) for p in os.environ['ALLUXIOJOB_HEALTHZ_PORTS'].split()]; port = next(p for p in ports if socket.socket().connect_ex(('127.0.0.1', p)) == 0); r.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).read()"]

ENTRYPOINT ["alluxiojob"]
CMD ["--help"]
