# syntax=docker/dockerfile:1
# The kstate-worker image. Build: `docker build -t kstate-worker .`; run:
#   docker run --network host -v kstate-state:/var/lib/kstate kstate-worker \
#     --set bootstrap.servers=127.0.0.1:9092 --set input.topic=clicks --set output.topic=session-counts
# Configuration lives at /etc/kstate/worker.toml (config/worker.toml with state.dir and
# metrics.addr set for a container); mount your own file there, or add `--set key=value`
# arguments. State (snapshots, checkpoints, the process id) is on the volume /var/lib/kstate:
# keep it across restarts so a restart replays only the changelog tail. /metrics, /healthz,
# /readyz and /status answer on port 9464. SIGTERM commits, closes the tasks and leaves the
# group; give the container a stop grace period of at least 30 s. Base images are pinned by
# tag (both Debian 13, so the binary's glibc matches). tests/container.rs checks this file.

FROM rust:1.95.0-slim-trixie AS build
# librdkafka is built from source by rdkafka-sys (its configure script, a C toolchain, zlib).
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY config ./config
# The same command as scripts/test's build step, plus --release (scripts/test skips the
# minutes a release build costs in CI).
RUN cargo build --release --locked --bin kstate-worker
RUN sed -e 's|^"state.dir" = .*|"state.dir" = "/var/lib/kstate"|' \
        -e 's|^"metrics.addr" = .*|"metrics.addr" = "0.0.0.0:9464"|' \
        config/worker.toml > /src/worker.toml

FROM debian:13.6-slim
RUN groupadd --system --gid 10001 kstate \
    && useradd --system --uid 10001 --gid kstate --no-create-home --shell /usr/sbin/nologin kstate \
    && mkdir -p /etc/kstate /var/lib/kstate \
    && chown kstate:kstate /var/lib/kstate
COPY --from=build /src/target/release/kstate-worker /usr/local/bin/kstate-worker
COPY --from=build /src/worker.toml /etc/kstate/worker.toml
USER 10001:10001
VOLUME ["/var/lib/kstate"]
EXPOSE 9464
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/kstate-worker", "--config", "/etc/kstate/worker.toml"]
