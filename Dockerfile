# The bidfilter server image (docs/deploy-kubernetes.md):
#   docker build -t bidfilter:0.1.0 .
#   docker run --rm -p 9090:9090 -p 9100:9100 -e BIDFILTER_STORE=s3://bucket/models bidfilter:0.1.0
# Both stages use the same pinned base: the virtualenv built in the first one links to the
# interpreter at /usr/local/bin, which must be the same file in the second.

# --- builder: a wheel of this checkout, installed with its dependencies into a virtualenv ---------
FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A C compiler for the compiled tree evaluator (src/bidfilter/scoring/_forest.c) and the Thrift
# binary codec's fast path (src/bidfilter/thrift/_fastbinary.c). Both are optional extensions:
# without a compiler the wheel still builds, and serving falls back to XGBoost's slower predict
# and the pure-Python codec. Versions are not pinned because Debian drops superseded ones from
# its archive; only the compiler's output reaches the runtime stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Only what the wheel is built from; the rest of the checkout stays out of the image.
COPY pyproject.toml README.md ./
COPY src ./src

# The dependencies all have manylinux wheels (xgboost brings its own libgomp), so the runtime
# stage needs no apt package. The import makes a failed extension build fail the image build.
RUN python -m venv /opt/bidfilter \
    && python -m pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && /opt/bidfilter/bin/pip install /tmp/wheels/bidfilter-*.whl \
    && /opt/bidfilter/bin/python -c "import bidfilter.scoring._forest, bidfilter.thrift._fastbinary"

# --- runtime --------------------------------------------------------------------------------------
FROM python:3.11.14-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="bidfilter" \
      org.opencontainers.image.description="Ad-filtering inference server for real-time bidding" \
      org.opencontainers.image.licenses="Apache-2.0"

# A numeric user, so that Kubernetes' runAsNonRoot can check it without a runAsUser. The cache
# directory is the one place the server writes; Kubernetes mounts an emptyDir over it.
RUN groupadd --system --gid 10001 bidfilter \
    && useradd --system --uid 10001 --gid bidfilter --create-home --home-dir /home/bidfilter \
       --shell /usr/sbin/nologin bidfilter \
    && install -d -o 10001 -g 10001 /var/cache/bidfilter

COPY --from=builder /opt/bidfilter /opt/bidfilter

# BIDFILTER_HOST: the server binds 127.0.0.1 by default, which nothing outside a container
# reaches. Bytecode was compiled at install time, so nothing needs writing next to the code
# (the root filesystem may be read-only).
ENV PATH=/opt/bidfilter/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BIDFILTER_HOST=0.0.0.0 \
    BIDFILTER_CACHE_DIR=/var/cache/bidfilter

WORKDIR /home/bidfilter
USER 10001:10001

# 9090: Thrift. 9100: HTTP side port (/healthz, /readyz, /metrics).
EXPOSE 9090 9100

# slim has no curl; the image's own Python asks /readyz, which answers 503 until a model is
# loaded and while draining, so urlopen raises and the check exits 1.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('BIDFILTER_METRICS_PORT', '9100') + '/readyz', timeout=4)"]

# The supervisor drains on SIGTERM for BIDFILTER_DRAIN_S (10 s, Docker's default stop timeout):
# give `docker stop --time` a few seconds more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["bidfilter"]
CMD ["serve"]
