# infadaptd %postun: after an upgrade, restart the service if it was running. Erasing keeps
# edited configuration (as .rpmsave) and the state in /var/lib/infadaptd; RPM has no purge.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart infadaptd.service >/dev/null 2>&1 || :
    fi
fi
exit 0
