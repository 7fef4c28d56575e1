# The bundled demo app, one per session: the lean spawner-demo binary,
# which starts in milliseconds. It listens on $PORT on every interface:
# HOST is deliberately left unset. Its "sidecar" mode serves /status for
# another app, so this image can also be SPAWNER_SIDECAR_IMAGE. Same
# context as spawner.Dockerfile; nothing is pulled.
FROM scratch
COPY spawner-demo /spawner-demo
USER 65534:65534
EXPOSE 8080
ENTRYPOINT ["/spawner-demo"]
CMD ["demo"]
