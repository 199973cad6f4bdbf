# infadaptd %post: the state directory; on first install the unit is enabled, not started.
if [ ! -d /var/lib/infadaptd ]; then
    install -d -o infadaptd -g infadaptd -m 0750 /var/lib/infadaptd
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    systemctl --no-reload enable infadaptd.service >/dev/null 2>&1 || :
fi
exit 0
