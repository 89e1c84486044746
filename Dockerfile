# sluice in a container: built from source in a Rust image, run from a distroless image that
# holds the binary, glibc, libgcc and CA certificates and nothing else (no shell, no package
# manager). See docs/deploy.md.
#
#   docker build -t sluice .
#   docker run -p 8080:8080 -v "$PWD/deploy/sluice.toml:/etc/sluice/sluice.toml:ro" sluice

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
# No debug line tables and a stripped binary: the runtime image needs neither.
ENV CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=true
RUN cargo build --release --locked -p sluice \
 && install -D target/release/sluice /out/sluice \
 && mkdir -p /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/sluice /usr/local/bin/sluice
# The data directory (SQLite spend log and cache when no Redis or PostgreSQL is configured),
# owned by the image's non-root user (65532).
COPY --from=build --chown=65532:65532 /out/data /var/lib/sluice
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["serve", "--config", "/etc/sluice/sluice.toml"]
