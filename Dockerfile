# aiproxy container image: a static binary (CGO_ENABLED=0, pure-Go SQLite)
# on distroless, running as a non-root user, with the database (and the key
# file that seals provider keys, unless AIPROXY_SECRET_KEY is given) on the
# /data volume.
#
#   docker build -t aiproxy --build-arg VERSION=$(git describe --tags) .
#   docker run -d --name aiproxy -p 8787:8787 -v aiproxy-data:/data \
#     -e AIPROXY_ACCESS_TOKEN=... aiproxy
#   docker exec aiproxy aiproxy user create alice
#
# The image has no shell and no curl: its HEALTHCHECK runs `aiproxy health`,
# which asks serve's /healthz on the address AIPROXY_LISTEN names.

FROM golang:1.26.8 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
ARG DATE=unknown
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/aiproxy/aiproxy/cmd.version=${VERSION} -X github.com/aiproxy/aiproxy/cmd.commit=${COMMIT} -X github.com/aiproxy/aiproxy/cmd.date=${DATE}" \
      -o /out/aiproxy . \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/aiproxy /usr/local/bin/aiproxy
# The volume's mount point, owned by the image's non-root user (65532), so
# that a new named volume starts writable by it.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
ENV AIPROXY_DB=/data/aiproxy.db \
    AIPROXY_LISTEN=0.0.0.0:8787
VOLUME ["/data"]
EXPOSE 8787
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/aiproxy", "health", "--timeout", "4s"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/aiproxy"]
CMD ["serve", "--log-format", "json"]
