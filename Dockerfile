# actcore image: built in a Rust stage, run from distroless (CA bundle, no
# shell, non-root). The tz database is inside the binary (jiff's
# tzdb-bundle-always), so the runtime image needs none. Paths, user and port
# are in k8s/contract.toml; `actcore contract verify` checks this file against it.
#
#   docker build -t ghcr.io/railiance/actcore:0.1.0 .     (runbooks/deploy.md)

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p actcore --bin actcore \
 && install -D -m 0755 target/release/actcore /out/actcore

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/actcore /usr/local/bin/actcore
COPY k8s/contract.toml /etc/actcore/contract.toml
# The definitions the image was built with; the Deployment mounts the
# ConfigMap of k8s/ over this path.
COPY definitions/ /etc/actcore/definitions/
ENV ACTCORE_DEFINITIONS=/etc/actcore/definitions
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/actcore"]
CMD ["worker"]
