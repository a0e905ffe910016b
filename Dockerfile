# One image, both binaries: /reclaim-agent (the DaemonSet) and /reclaim-classifier (the
# Deployment); the manifests pick one with `command`. /kubectl-reclaim, the kubectl plugin,
# rides along for whoever copies it out (`docker cp`) instead of building it.
#
#   docker build -t ghcr.io/reclaim-dev/reclaim:0.1.0 .
#
# Build stage: the release profile of Cargo.toml (size-tuned: opt-level s, fat LTO,
# panic=abort, stripped), from the committed Cargo.lock.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p reclaim-agent -p reclaim-classifier -p kubectl-reclaim --bins \
 && install -m 0755 target/release/reclaim-agent target/release/reclaim-classifier target/release/kubectl-reclaim /usr/local/bin/

# Run stage: glibc and libgcc only (the binaries use rustls, no OpenSSL), no shell, no
# package manager; user 65532 (nonroot). Nothing is written to the filesystem at run time.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/reclaim-agent /usr/local/bin/reclaim-classifier /usr/local/bin/kubectl-reclaim /
USER 65532:65532
EXPOSE 9847 9848
ENTRYPOINT ["/reclaim-agent"]
