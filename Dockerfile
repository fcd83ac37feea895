# The orders example (examples/orders) as a container image: a static
# binary (CGO_ENABLED=0 links the pure-Go SQLite driver, internal/sqlitex)
# on distroless, run as a non-root user, with its data in /data.
#
#   docker build -t esraft-orders --build-arg VERSION=$(git describe --always --dirty) .
#   docker run --rm -p 8080:8080 -v orders-data:/data esraft-orders
#
# It sits at the repository root because the build context must be the
# module root (go.mod); it builds only the example.

FROM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so that a change to the code alone reuses this layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Printed by -version; the context has no .git, so Go records no commit.
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
        -o /out/orders ./examples/orders \
    && mkdir -p /out/data

# distroless/static holds CA certificates (for -notify-url over https),
# tzdata and a nonroot user (65532), and no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/orders /orders
# The data directory belongs to the nonroot user, so that a named volume
# created from it is writable.
COPY --from=build --chown=65532:65532 /out/data /data
VOLUME /data
# 8080: HTTP (API, /healthz, /readyz, /metrics, the console under /ui/).
# A cluster node also needs its cluster port (-addr, e.g. 7000) and, with
# -kafka, the Kafka listener's; publish them with -p as you choose them.
EXPOSE 8080
USER nonroot:nonroot
# One node, data in the volume, HTTP on every interface of the container
# (the program's own default is loopback, unreachable from outside).
# Arguments after the image name are added: -log-level info, -node ...
ENTRYPOINT ["/orders", "-data", "/data", "-http", "0.0.0.0:8080"]
