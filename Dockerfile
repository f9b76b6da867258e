FROM python:3.11-slim
# plyvel ships manylinux wheels; no compiler is needed.
WORKDIR /app
COPY pyproject.toml README.md ./
COPY k2node ./k2node
RUN pip install --no-cache-dir . && useradd --create-home k2node && mkdir /data \
    && chown k2node /data
USER k2node
ENV SERVER_HOST=0.0.0.0 K2NODE_LOG_FORMAT=json
EXPOSE 30017
STOPSIGNAL SIGTERM
CMD ["k2node", "run", "--env-file", "/app/.env-local", "--data-dir", "/data"]
