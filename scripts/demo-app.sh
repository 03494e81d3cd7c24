#!/bin/sh
# Demo app of balena-py (the image 127.0.0.1:5000/balena-py/demo, built by engine.sh): serves a page with busybox httpd on $PORT and logs a line every
# $LOG_INTERVAL seconds. Exits cleanly on SIGTERM.
PORT="${PORT:-8080}"
LOG_INTERVAL="${LOG_INTERVAL:-5}"
mkdir -p /tmp/www
cat >/tmp/www/index.html <<HTML
<!doctype html>
<html><head><title>balena-py demo</title></head>
<body><h1>balena-py demo</h1>
<p>service: ${BALENA_SERVICE_NAME:-unknown}, host: $(hostname), port: $PORT</p></body></html>
HTML
httpd -f -p "$PORT" -h /tmp/www &
HTTPD=$!
trap 'kill "$HTTPD" 2>/dev/null; echo "demo: stopping"; exit 0' TERM INT
echo "demo: serving on port $PORT"
i=0
while :; do
	i=$((i + 1))
	echo "demo: tick $i, port $PORT"
	sleep "$LOG_INTERVAL" &
	wait $!
done
