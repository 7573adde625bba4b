# syntax=docker/dockerfile:1
# Ebb's image: both binaries (`ebb` for the planner and the CLI, `ebb-worker`)
# on a distroless base with glibc and CA certificates, run as a non-root user.
# Build: docker build -t ebb .    (the Helm chart in deploy/helm/ebb runs it)

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep crates and build artefacts between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ebb --bin ebb-worker \
    && install -D -m 0755 target/release/ebb target/release/ebb-worker -t /out/

# glibc, libgcc and CA certificates, no shell; user 65532 "nonroot".
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
# The planner's API and /metrics; a worker's /healthz and /metrics.
EXPOSE 8080 8081
ENTRYPOINT ["ebb"]
CMD ["--help"]
