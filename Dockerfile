# nvcf-lite in a container: the one-file executable on a slim base. The build reaches no registry
# and no network: the base is a build argument and the only input is the executable in the build
# context (.dockerignore sends nothing else).
#
#   scripts/build-executable.sh                    # makes dist/nvcf-lite
#   docker build -t nvcf-lite .                    # FROM debian:12-slim (needs a registry once)
#   docker build --build-arg BASE_IMAGE=<a local image with glibc> -t nvcf-lite .
#
# Run it with the host's Docker socket, the host's network (function containers publish their
# ports on the host's 127.0.0.1) and the data directory at the same path as on the host (the
# host's engine resolves the paths nvcf-lite mounts into function containers; a missing or
# mismatched mount is refused at start with the right -v). --gpus all gives it NVML (the NVIDIA
# container toolkit is needed on the host; leave it out on a host without GPUs):
#
#   docker run -d --name nvcf-lite --network host --gpus all \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     -v /var/lib/nvcf-lite:/var/lib/nvcf-lite -v /run/nvcf-lite:/run/nvcf-lite nvcf-lite
#   docker logs nvcf-lite                          # the first start's admin key
ARG BASE_IMAGE=debian:12-slim
FROM ${BASE_IMAGE}

COPY dist/nvcf-lite /usr/local/bin/nvcf-lite

# The same path inside as on the host; `docker exec nvcf-lite nvcf-lite keys ...` finds it too.
ENV NVCF_LITE_STORE__DATA_DIR=/var/lib/nvcf-lite
# The one-file executable unpacks itself into $TMPDIR at each start.
ENV TMPDIR=/tmp
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/nvcf-lite"]
CMD ["serve"]
