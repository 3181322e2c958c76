# clearml-gateway: one static-ish binary on a small base, run as 65532:65532 like the
# original gateway's images. No shell is needed at run time: the health check is the binary's
# own `--health-check`.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin clearml-gateway

# distroless/cc: glibc, libgcc, CA certificates (for an https:// CLEARML_API_HOST), no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/clearml-gateway /clearml-gateway
USER 65532:65532
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/clearml-gateway", "--health-check"]
ENTRYPOINT ["/clearml-gateway"]
