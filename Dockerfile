# syntax=docker/dockerfile:1
#
# Portico's two images from one build:
#   docker build --target proxy    -t ghcr.io/portico-dev/portico-proxy:VERSION .
#   docker build --target operator -t ghcr.io/portico-dev/portico-operator:VERSION .
# (`make image` does both with VERSION from Cargo.toml.)

# Build: both binaries in one release build, so the dependency graph is compiled once. The
# cache mounts keep the registry and target directory between builds.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
# Every workspace member must be present for Cargo to read the workspace (.dockerignore keeps
# target/ and .git out).
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p portico-proxy -p portico-operator \
 && mkdir -p /out \
 && cp target/release/portico-proxy target/release/portico-operator /out/

# Runtime: distroless with glibc and libgcc (the binaries link them dynamically), no shell,
# running as the unprivileged user 65532. The proxy's preStop uses the kubelet's sleep action,
# so no sleep binary is needed.
FROM gcr.io/distroless/cc-debian12:nonroot AS proxy
COPY --from=build /out/portico-proxy /usr/local/bin/portico-proxy
USER 65532:65532
EXPOSE 8080 8443 9901
ENTRYPOINT ["/usr/local/bin/portico-proxy"]

FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /out/portico-operator /usr/local/bin/portico-operator
USER 65532:65532
EXPOSE 8443 9901
ENTRYPOINT ["/usr/local/bin/portico-operator"]
