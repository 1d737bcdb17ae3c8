# The operator image, from Debian's packages and the project's wheel with its dependencies from PyPI.
# Elsewhere: `docker build -t auditwatch:0.1.0 .`. Without Docker or a registry: `make image` builds this
# same file with buildah on a debian:bookworm-slim made from Debian's packages by mmdebstrap (README).
FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
# Behind a TLS-inspecting proxy, pip needs its CA: --build-arg PIP_CERT=FILE with FILE mounted in.
ARG PIP_CERT
COPY pyproject.toml README.md /src/
COPY operator /src/operator
# The C extension (engine/_candidates.c) builds here; the final image has no compiler. What the operator
# never loads goes: the venv's installers, the asyncio copy of the Kubernetes client (it uses the sync
# one) and the API models of AWS services other than CloudWatch Logs and the credential providers'.
RUN python3 -m venv /opt/auditwatch \
 && /opt/auditwatch/bin/pip install --no-cache-dir /src \
 && /opt/auditwatch/bin/pip uninstall -y -q pip setuptools \
 && cd /opt/auditwatch/lib/python3.11/site-packages \
 && rm -rf kubernetes/aio \
 && find botocore/data -mindepth 1 -maxdepth 1 -type d -not -regex '.*/\(logs\|sts\|sso\|sso-oidc\)' \
      -exec rm -rf {} + \
 && /opt/auditwatch/bin/python -c "import auditwatch.engine._candidates, boto3; \
      [boto3.client(s, region_name='us-east-1') for s in ('logs', 'sts', 'sso', 'sso-oidc')]; \
      import grpc.aio, google.pubsub_v1.services.subscriber, azure.storage.blob.aio, azure.identity.aio, aiokafka"

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/lib/dpkg/*-old
COPY --from=build /opt/auditwatch /opt/auditwatch
# A read-only root file system: no bytecode written at run time (pip compiled it at install).
ENV PATH=/opt/auditwatch/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["auditwatch"]
CMD ["run"]
