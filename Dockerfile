# One image with the workspace's three programs: gridlb (the proxy), substation (the
# simulator) and ev-demand (the demand generator). docker-compose.yml runs each service from
# it with its own command.
#
#   docker build -t gridlb .
#   docker run --rm gridlb gridlb --help

# --- build: Rust on Debian bookworm; Pingora's build needs cmake (zlib-ng) and a C compiler.
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin gridlb --bin substation --bin ev-demand \
 && mkdir /out \
 && cp target/release/gridlb target/release/substation target/release/ev-demand /out/

# --- run: slim Debian, the three binaries, curl for the health check, a non-root user.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gridlb
COPY --from=build /out/ /usr/local/bin/
COPY conf/compose/gridlb.yaml /etc/gridlb/gridlb.yaml
USER gridlb
WORKDIR /tmp
# The proxy and its admin API (GET /healthz, /metrics, /status, the status page at /).
EXPOSE 8080 9100
# HEALTH_URL is the /healthz of whichever program the container runs (compose sets it for
# the substations).
ENV HEALTH_URL=http://127.0.0.1:9100/healthz
HEALTHCHECK --interval=5s --timeout=2s --start-period=5s --retries=3 \
  CMD curl -fsS "$HEALTH_URL" > /dev/null || exit 1
CMD ["gridlb", "--config", "/etc/gridlb/gridlb.yaml"]
