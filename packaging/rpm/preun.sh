# infadaptd %preun: on erase (not upgrade), stop and disable the service.
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl --no-reload disable --now infadaptd.service >/dev/null 2>&1 || :
    else
        systemctl --no-reload disable infadaptd.service >/dev/null 2>&1 || :
    fi
fi
exit 0
