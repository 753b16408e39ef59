# syntax=docker/dockerfile:1
# The production image: the Go binary, nsjail built from its upstream
# release tag, Debian's python3 with numpy, pandas and msgpack, and the
# repository's nsjail.cfg. No Docker engine runs on the development
# machines, so every step but the nsjail build calls what `make run`,
# `make test` and CI run there: `make binary` and scripts/install-deps.sh.
# The nsjail build needs the upstream repository, which those machines
# cannot reach; its result is tested by `make test` when nsjail is on PATH
# (REQUIRE_NSJAIL=1 makes its absence a failure).

ARG NSJAIL_VERSION=3.6

FROM golang:1.26-bookworm AS binary
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN make binary BIN=/out/pyexecd

FROM debian:bookworm AS nsjail
ARG NSJAIL_VERSION
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      autoconf bison ca-certificates flex g++ gcc git libnl-route-3-dev libprotobuf-dev libtool make \
      pkg-config protobuf-compiler \
 && git clone --depth 1 --branch "$NSJAIL_VERSION" --recurse-submodules --shallow-submodules \
      https://github.com/google/nsjail.git /nsjail \
 && make -C /nsjail -j"$(nproc)" \
 && install -D -m 0755 /nsjail/nsjail /out/nsjail

FROM debian:bookworm-slim
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN NSJAIL_RUNTIME=1 /tmp/install-deps.sh && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh
COPY --from=binary /out/pyexecd /usr/local/bin/pyexecd
COPY --from=nsjail /out/nsjail /usr/local/bin/nsjail
COPY nsjail.cfg /etc/pyexec/nsjail.cfg
# Everything runs as nobody; nsjail maps the sandbox to that same uid.
USER 65534:65534
ENV PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD ["/usr/bin/python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8080'), timeout=2)"]
ENTRYPOINT ["/usr/local/bin/pyexecd", "--jail", "nsjail", "--nsjail-config", "/etc/pyexec/nsjail.cfg"]
