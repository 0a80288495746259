# otelbee container image: the static agent binary on an empty base.
#
# Built by `make image` (podman or buildah, no Docker engine needed). The binary
# is built on the host first (`make build`, CGO_ENABLED=0, so it is static) and
# copied in: the build pulls no base image and runs nothing inside a container.
#
# The agent needs, at run time, only what the Helm chart mounts (bpffs,
# tracefs, the host's /proc through hostPID) and the capabilities it grants;
# see docs/kubernetes.md.
FROM scratch
ARG VERSION=dev
LABEL org.opencontainers.image.title="otelbee" \
      org.opencontainers.image.description="eBPF observability agent: TCP, DNS and HTTP metrics and spans, exported as OTLP and Prometheus" \
      org.opencontainers.image.source="https://github.com/otelbee/otelbee" \
      org.opencontainers.image.version="${VERSION}"
COPY build/bin/otelbee /otelbee
# Prometheus /metrics (agent default); documented, not needed for OTLP push.
EXPOSE 9464
ENTRYPOINT ["/otelbee"]
CMD ["run"]
