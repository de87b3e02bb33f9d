# QuorumKV: one image for the replica (`quorumkv serve`, the default command) and the
# operator (`quorumkv-operator`).
#
#   docker build -t quorumkv:dev .          # anywhere with network access (PyPI, Docker Hub)
#   e2e/image/build.sh                      # offline: local Debian base + host-made wheelhouse
#
# An offline build fills e2e/image/wheels/ and passes
#   --build-arg BASE_IMAGE=quorumkv-base:bookworm
#   --build-arg PIP_INSTALL_ARGS="--no-index --find-links /wheels"
# Every stage uses the same BASE_IMAGE on purpose: the venv's python is a symlink to the base
# image's interpreter (/usr/local/bin/python3 in python:*-slim, /usr/bin/python3 in Debian).
#
# Layout in the image: /opt/quorumkv is a venv holding the third-party dependencies; our own
# code is installed apart in /opt/quorumkv/app (on sys.path through a .pth file), so a source
# change rebuilds and ships a layer of a few hundred KB instead of the whole venv.
ARG BASE_IMAGE=python:3.12-slim

# ------------------------------------------------ reqs: the requirement list from pyproject.toml
FROM ${BASE_IMAGE} AS reqs
COPY pyproject.toml /tmp/pyproject.toml
RUN python3 -c 'import tomllib; d = tomllib.load(open("/tmp/pyproject.toml", "rb")); \
print("\n".join(d["build-system"]["requires"] + d["project"]["dependencies"]))' \
    > /tmp/requirements.txt

# ------------------------------------------------ deps: venv with the dependencies + build tools
FROM ${BASE_IMAGE} AS deps
ARG PIP_INSTALL_ARGS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
# Empty (only .gitkeep) unless an offline build filled it; harmless otherwise.
COPY e2e/image/wheels/ /wheels/
# Only the requirement list, not pyproject.toml: Docker's cache keys on the copied content,
# so edits elsewhere in pyproject.toml (or in the source) keep the dependency layer cached.
COPY --from=reqs /tmp/requirements.txt /tmp/requirements.txt
RUN python3 -m venv /opt/quorumkv \
 && /opt/quorumkv/bin/pip install ${PIP_INSTALL_ARGS} -r /tmp/requirements.txt \
 && /opt/quorumkv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
    | xargs -I{} sh -c 'echo /opt/quorumkv/app > {}/quorumkv-app.pth'

# ------------------------------------------------ runtime-deps: the same venv without installers
FROM deps AS runtime-deps
RUN /opt/quorumkv/bin/pip uninstall -y -q setuptools wheel pip \
 && rm -rf /opt/quorumkv/share

# ------------------------------------------------ app: our own packages and console scripts
FROM deps AS app
WORKDIR /src
COPY service/ service/
COPY operator/ operator/
COPY pyproject.toml README* ./
RUN /opt/quorumkv/bin/pip install ${PIP_INSTALL_ARGS} --no-deps --no-build-isolation \
        --target /opt/quorumkv/app . \
 && /opt/quorumkv/bin/pip check

# ------------------------------------------------ final
FROM ${BASE_IMAGE}
# Numeric user, so `runAsNonRoot` can check it. The data dir is also group 0 writable for
# platforms that run images under an arbitrary uid in group 0 (OpenShift).
ARG QUORUMKV_UID=10001
RUN groupadd --gid "${QUORUMKV_UID}" quorumkv \
 && useradd --uid "${QUORUMKV_UID}" --gid "${QUORUMKV_UID}" --no-create-home \
        --home-dir /var/lib/quorumkv --shell /usr/sbin/nologin quorumkv \
 && mkdir -p /var/lib/quorumkv \
 && chown "${QUORUMKV_UID}:0" /var/lib/quorumkv \
 && chmod 0770 /var/lib/quorumkv
COPY --from=runtime-deps /opt/quorumkv /opt/quorumkv
COPY --from=app /opt/quorumkv/app /opt/quorumkv/app
# HOME=/tmp: the root file system may be read-only; only the data dir and /tmp are written.
ENV PATH=/opt/quorumkv/app/bin:/opt/quorumkv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    VIRTUAL_ENV=/opt/quorumkv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    QUORUMKV_DATA_DIR=/var/lib/quorumkv
WORKDIR /var/lib/quorumkv
VOLUME ["/var/lib/quorumkv"]
EXPOSE 8080
USER ${QUORUMKV_UID}:${QUORUMKV_UID}
CMD ["quorumkv", "serve"]

ARG VERSION=0.1.0
ARG VCS_REF=unknown
LABEL org.opencontainers.image.title="quorumkv" \
      org.opencontainers.image.description="QuorumKV replica (quorumkv serve) and Kubernetes operator (quorumkv-operator)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}"
