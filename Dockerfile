# nvcf-lite in a container. Build it where a registry is reachable (python:3.11-slim is pulled):
#   docker build -t nvcf-lite .
#   docker run -d --network host -v /var/run/docker.sock:/var/run/docker.sock \
#     -v /var/lib/nvcf-lite:/var/lib/nvcf-lite nvcf-lite
# --network host: function containers publish their ports on the host's 127.0.0.1.
# The data directory keeps the host's path: the host's Docker engine resolves mount sources.
FROM python:3.11-slim

WORKDIR /opt/nvcf-lite
COPY pyproject.toml README.md config.toml ./
COPY nvcf_lite ./nvcf_lite
RUN pip install --no-cache-dir . && rm -rf build

ENV NVCF_LITE_STORE__DATA_DIR=/var/lib/nvcf-lite \
    PYTHONUNBUFFERED=1
VOLUME /var/lib/nvcf-lite
EXPOSE 8080

ENTRYPOINT ["nvcf-lite"]
CMD ["serve", "--host", "0.0.0.0"]
