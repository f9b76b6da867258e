# k2node in a container. BASE is any Debian-like image with Python 3.11 or newer and venv
# (python:3.11-slim by default; the compose test builds one from Debian's packages).
ARG BASE=python:3.11-slim
FROM ${BASE}
WORKDIR /app
COPY pyproject.toml README.md ./
COPY k2node ./k2node
# An environment of its own: a Debian base refuses pip installs into its Python (PEP 668).
# plyvel and the other compiled dependencies ship wheels: no compiler is needed.
RUN python3 -m venv /venv && /venv/bin/pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 k2node && mkdir -p /data && chown k2node /data
COPY deploy/container-start /usr/local/bin/k2node-start
# (no USER: k2node-start hands the operator's files to the user `k2node`, then runs as it)
ENV PATH=/venv/bin:$PATH SERVER_HOST=0.0.0.0 SERVER_PORT=30017 K2NODE_LOG_FORMAT=json
VOLUME /data
EXPOSE 30017
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD \
    python3 -c "import os, urllib.request as u; u.urlopen('http://127.0.0.1:' + os.environ['SERVER_PORT'] + '/', timeout=2)"
CMD ["k2node-start"]
