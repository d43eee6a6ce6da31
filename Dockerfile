# syntax=docker/dockerfile:1
#
# xborder gateway image: built with the locked dependencies, run as the
# distroless non-root user (65532) with nothing in the image but the binary
# and the C runtime it links (glibc, libgcc). No certificates or keys are
# baked in: mount them (see deploy/README.md).
#
#   docker build -t xborder:0.1.0 .
#   docker run --rm xborder:0.1.0 --help

ARG RUST_VERSION=1

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /build
# Only what the build reads (.dockerignore keeps target/, .git and certs/ out).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# The registry and target caches survive between builds (BuildKit); the
# binary is copied out of the cache mount so the next stage can take it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked --bin xborder \
    && install -D -m 0755 target/release/xborder /out/xborder \
    && install -d -m 0700 /out/data

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="xborder" \
      org.opencontainers.image.description="Mutual-TLS gateway for cross-border evidence exchange" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/xborder /usr/local/bin/xborder
# data_dir for a plain `docker run`; in Kubernetes a volume is mounted here.
COPY --from=builder --chown=65532:65532 /out/data /var/lib/xborder
USER 65532:65532
WORKDIR /var/lib/xborder
# border (mTLS), admin (mTLS), ops (/healthz, /readyz, /metrics). The local
# listener is loopback-only and is not exposed.
EXPOSE 8443 8444 9090
# SIGTERM drains within timeouts.shutdown_grace; SIGHUP reloads certificates.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/xborder"]
CMD ["serve", "--config", "/etc/xborder/gateway.toml"]
