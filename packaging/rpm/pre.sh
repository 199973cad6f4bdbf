# infadaptd %pre: the service user, before the files are unpacked.
getent group infadaptd >/dev/null || groupadd --system infadaptd
getent passwd infadaptd >/dev/null || useradd --system --gid infadaptd \
    --home-dir /var/lib/infadaptd --no-create-home --shell /sbin/nologin \
    --comment "infadaptd autoscaler" infadaptd
exit 0
