#!/bin/sh
# Install PathViewer's desktop integration for the current user (XDG, ~/.local/share):
# the .desktop launcher, the hicolor icons, the MIME types for whole-slide formats and the
# AppStream metainfo, then refresh the desktop databases when their tools exist.
#
#   packaging/install-desktop.sh                 # launcher runs `pathviewer-gui` (pip install)
#   packaging/install-desktop.sh --exec /opt/pathviewer/pathviewer   # a PyInstaller bundle
#   packaging/install-desktop.sh --uninstall
#
# XDG_DATA_HOME (default ~/.local/share) chooses the target; DESTDIR is honoured for packagers.
set -eu

APP_ID=io.github.pathviewer.PathViewer
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
ICONS="$REPO/resources/icons"
DATA="${DESTDIR:-}${XDG_DATA_HOME:-$HOME/.local/share}"
EXEC=""
UNINSTALL=0

while [ $# -gt 0 ]; do
    case "$1" in
        --exec) EXEC="$2"; shift 2 ;;
        --exec=*) EXEC="${1#--exec=}"; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "install-desktop.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

SIZES="16 24 32 48 64 128 256"

if [ "$UNINSTALL" = 1 ]; then
    rm -f "$DATA/applications/$APP_ID.desktop" \
          "$DATA/mime/packages/$APP_ID.xml" \
          "$DATA/metainfo/$APP_ID.metainfo.xml" \
          "$DATA/icons/hicolor/scalable/apps/$APP_ID.svg"
    for size in $SIZES; do
        rm -f "$DATA/icons/hicolor/${size}x${size}/apps/$APP_ID.png"
    done
else
    mkdir -p "$DATA/applications" "$DATA/mime/packages" "$DATA/metainfo" \
             "$DATA/icons/hicolor/scalable/apps"
    if [ -n "$EXEC" ]; then
        # A bundle path: quote-free absolute path expected (desktop Exec quoting rules).
        case "$EXEC" in /*) ;; *) EXEC="$(pwd)/$EXEC" ;; esac
        sed -e "s|^Exec=.*|Exec=$EXEC %F|" -e "s|^TryExec=.*|TryExec=$EXEC|" \
            "$HERE/pathviewer.desktop" > "$DATA/applications/$APP_ID.desktop"
    else
        cp "$HERE/pathviewer.desktop" "$DATA/applications/$APP_ID.desktop"
    fi
    cp "$HERE/pathviewer-mime.xml" "$DATA/mime/packages/$APP_ID.xml"
    cp "$HERE/$APP_ID.metainfo.xml" "$DATA/metainfo/$APP_ID.metainfo.xml"
    cp "$ICONS/pathviewer.svg" "$DATA/icons/hicolor/scalable/apps/$APP_ID.svg"
    for size in $SIZES; do
        mkdir -p "$DATA/icons/hicolor/${size}x${size}/apps"
        cp "$ICONS/pathviewer-$size.png" "$DATA/icons/hicolor/${size}x${size}/apps/$APP_ID.png"
    done
fi

# Refresh caches (each tool is optional; a missing one only delays the desktop noticing).
if command -v update-mime-database >/dev/null 2>&1; then
    update-mime-database "$DATA/mime" >/dev/null 2>&1 || true
fi
if command -v update-desktop-database >/dev/null 2>&1; then
    update-desktop-database "$DATA/applications" >/dev/null 2>&1 || true
fi
if command -v gtk-update-icon-cache >/dev/null 2>&1; then
    gtk-update-icon-cache -q -t "$DATA/icons/hicolor" >/dev/null 2>&1 || true
fi

if [ "$UNINSTALL" = 1 ]; then
    echo "PathViewer desktop integration removed from $DATA"
else
    echo "PathViewer desktop integration installed in $DATA"
fi
