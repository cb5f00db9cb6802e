# Prometheus without a registry: Debian's /usr/bin/prometheus (package
# `prometheus`), which is dynamically linked against glibc alone, with the
# loader and libc it names (copied by build-images.sh from `ldd`), Debian's
# web assets, and empty /prometheus and /tmp. The configuration is mounted at
# /etc/prometheus by docker-compose.yml (deploy/prometheus/).
FROM scratch
COPY target-docker/prometheus-rootfs/ /
EXPOSE 9090/tcp
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", "--web.listen-address=:9090"]
