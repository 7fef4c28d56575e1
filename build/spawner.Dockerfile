# Spawner in every mode: "spawner gateway", "spawner provisioner", "spawner
# nats" and so on. The context is a directory holding the static binary
# (CGO_ENABLED=0) as "spawner" (beside spawner-demo, for demo.Dockerfile)
# and an empty directory "data"; "make images"
# prepares it. Nothing is pulled: the image starts from scratch.
FROM scratch
COPY spawner /spawner
# The NATS mode keeps JetStream here. A named volume mounted on /data copies
# this ownership, so the unprivileged user can write it.
COPY --chown=65534:65534 data /data
ENV SPAWNER_DATA_DIR=/data
USER 65534:65534
EXPOSE 8080 4222 7070
ENTRYPOINT ["/spawner"]
