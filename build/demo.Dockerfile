# The bundled demo app, one per session. It listens on $PORT on every
# interface: HOST is deliberately left unset. Same context as
# spawner.Dockerfile; nothing is pulled.
FROM scratch
COPY spawner /spawner
USER 65534:65534
EXPOSE 8080
ENTRYPOINT ["/spawner", "demo"]
