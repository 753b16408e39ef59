# The production image: the Go binary, the jail, Debian's python3 with
# numpy, pandas and msgpack, and the repository's nsjail.cfg. Built and run
# by `make image-test` (scripts/image-test.sh), which proves it works.
#
# Build arguments and contexts (every one has a default):
#   JAIL=nsjail|bwrap   nsjail (the default, built from source) or Debian's
#                       bubblewrap only: no nsjail stage is built or copied.
#   VERSION=...         what /health and --version report (default "dev").
#   NSJAIL_VERSION=3.6  the upstream tag cloned when no source is given.
#   --build-context nsjail-src=DIR
#                       nsjail's source instead of the clone: a checkout of
#                       github.com/google/nsjail at NSJAIL_VERSION with its
#                       kafel submodule (DIR/kafel) checked out too.
#   --secret id=build-ca,src=FILE
#                       a CA bundle the Go build stage trusts for the module
#                       proxy (a TLS-intercepting egress); it is mounted for
#                       that one step and never stored in a layer.
# No step reaches a registry but for the base images of the FROM lines; the
# steps fetch from Debian's mirror, the Go module proxy and, for the
# default nsjail source only, GitHub.

ARG JAIL=nsjail
ARG NSJAIL_VERSION=3.6

FROM docker.io/library/golang:1.26-bookworm AS binary
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=secret,id=build-ca \
    if [ -s /run/secrets/build-ca ]; then export SSL_CERT_FILE=/run/secrets/build-ca; fi; \
    go mod download
COPY . .
RUN make binary BIN=/out/pyexecd VERSION="$VERSION"

# nsjail's source: the pinned upstream tag, unless --build-context
# nsjail-src=DIR replaces this stage.
FROM docker.io/library/debian:bookworm AS nsjail-clone
ARG NSJAIL_VERSION
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates git \
 && git clone --depth 1 --branch "$NSJAIL_VERSION" --recurse-submodules --shallow-submodules \
      https://github.com/google/nsjail.git /nsjail
FROM scratch AS nsjail-src
COPY --from=nsjail-clone /nsjail /

FROM docker.io/library/debian:bookworm AS nsjail
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      autoconf bison flex g++ gcc libnl-route-3-dev libprotobuf-dev libtool make pkg-config protobuf-compiler
COPY --from=nsjail-src / /nsjail
# clean first: a source directory may hold objects of another build.
RUN make -C /nsjail clean >/dev/null && make -C /nsjail -j"$(nproc)" \
 && install -D -m 0755 /nsjail/nsjail /out/nsjail

# The default runtime (issue 22): Debian 13's Python and scientific stack
# from runtimes/debian13-ds.conf, installed into an image of its own suite
# (a rootless build cannot debootstrap), whose root the final image carries
# as the runtime's root. deploy/image/build-runtime-in-image.sh writes its
# runtime.conf, versions and packages under /out, as scripts/build-runtime.sh
# does on a host.
FROM docker.io/library/debian:trixie-slim AS runtime-debian13-ds
COPY runtimes/debian13-ds.conf /tmp/runtime.conf
COPY deploy/image/build-runtime-in-image.sh scripts/runtime-versions.py /tmp/
RUN /tmp/build-runtime-in-image.sh debian13-ds && rm /tmp/build-runtime-in-image.sh /tmp/runtime-versions.py /tmp/runtime.conf

# What both variants run: Debian's python3 with numpy, pandas, msgpack and
# seccomp, bubblewrap, and (nsjail variant) nsjail's shared libraries.
FROM docker.io/library/debian:bookworm-slim AS runtime
ARG JAIL
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN if [ "$JAIL" = nsjail ]; then export NSJAIL_RUNTIME=1; fi; \
    /tmp/install-deps.sh && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh
COPY --from=binary /out/pyexecd /usr/local/bin/pyexecd
COPY nsjail.cfg /etc/pyexec/nsjail.cfg

FROM runtime AS with-bwrap

FROM runtime AS with-nsjail
COPY --from=nsjail /out/nsjail /usr/local/bin/nsjail

# The variant JAIL names; the other's stages are not built.
FROM with-${JAIL}
ARG JAIL
# The runtime's root and its description, laid out as the server's
# --runtime-dir expects (NAME a link to NAME.HASH; here the hash is
# "image"); its files keep the modes dpkg gave them.
COPY --from=runtime-debian13-ds / /var/lib/pyexec/runtimes/debian13-ds.image/root/
RUN cd /var/lib/pyexec/runtimes \
 && mv debian13-ds.image/root/out/debian13-ds/* debian13-ds.image/ && rm -rf debian13-ds.image/root/out \
 && ln -s debian13-ds.image debian13-ds \
 && chmod 755 /var/lib/pyexec . debian13-ds.image debian13-ds.image/root && chmod 644 debian13-ds.image/versions debian13-ds.image/packages debian13-ds.image/runtime.conf
# Everything runs as nobody; the jail maps the sandbox to that same uid.
USER 65534:65534
# Sandboxes run the Debian 13 runtime; --runtimes debian13-ds,host (or
# PYEXEC_RUNTIMES) adds the image's own Debian 12 Python beside it.
ENV PORT=8080 PYEXEC_JAIL=${JAIL} PYEXEC_NSJAIL_CONFIG=/etc/pyexec/nsjail.cfg \
    PYEXEC_RUNTIMES=debian13-ds PYEXEC_RUNTIME_DIR=/var/lib/pyexec/runtimes
EXPOSE 8080
# Kept by podman and buildah only with --format docker (OCI images have no
# health check).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD ["/usr/bin/python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8080'), timeout=2)"]
ENTRYPOINT ["/usr/local/bin/pyexecd"]
