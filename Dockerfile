# zerogate serve in a container: the gateway, from a config file mounted at
# /etc/zerogate/zerogate.yaml ($ZEROGATE_CONFIG).
#
#   docker build -t zerogate .
#   docker run --rm -p 8080:8080 \
#       -v "$PWD/zerogate.yaml:/etc/zerogate/zerogate.yaml:ro" zerogate
#
# Backends named in the config must be reachable from the container (not 127.0.0.1 of the
# host). Give `docker stop -t` (compose: stop_grace_period) more seconds than the config's
# gateway.shutdown_grace (default 10), so SIGTERM can drain requests in flight before SIGKILL.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ZEROGATE_CONFIG=/etc/zerogate/zerogate.yaml

# Installed as the README does (pip install of the repository), without the test extras.
# Every dependency ships manylinux wheels for 3.11, so the slim image needs no compiler.
COPY pyproject.toml README.md /tmp/zerogate/
COPY rpccore /tmp/zerogate/rpccore
COPY gateway /tmp/zerogate/gateway
COPY auth /tmp/zerogate/auth
COPY openapi /tmp/zerogate/openapi
RUN pip install /tmp/zerogate && rm -rf /tmp/zerogate

# Not root. /var/lib/zerogate is its own writable place, e.g. for a token store given as
# sqlite:////var/lib/zerogate/tokens.db (the config folder is usually mounted read-only).
RUN useradd --system --uid 10001 --home-dir /var/lib/zerogate --create-home zerogate
USER zerogate
WORKDIR /var/lib/zerogate

EXPOSE 8080

# Slim images have no curl: python's urllib fails (exit 1) on no answer or a non-2xx one.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

# Inside the container the gateway listens on 0.0.0.0 (whatever gateway.host says, often
# 127.0.0.1, which nothing outside the container could reach), on the port EXPOSEd above
# and probed by the HEALTHCHECK. `docker run IMAGE serve --workers 2 ...` replaces these.
ENTRYPOINT ["zerogate"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
