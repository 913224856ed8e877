"""A stand-in Prometheus on 127.0.0.1 for e2e/auto-rollback.sh's --prometheus checks.

The release's pods there are scraped by no Prometheus, so the error ratio cannot be real; what
the test proves is auto-rollback.sh's wiring: a gate that fails rolls the release back. The
gate itself, against a real Prometheus with the shipped recording rules, is proven by
self-healing/tests/live-prometheus.sh.

/api/v1/rules answers the two recording rules release::verify_prometheus requires (so the gate
runs rather than being skipped); every /api/v1/query answers one sample of RATIO and is appended
to QUERIES_FILE.

Usage: python3 e2e/stand_in_prometheus.py PORT QUERIES_FILE RATIO
"""
import http.server
import json
import sys
import urllib.parse

RULES = {
    "status": "success",
    "data": {
        "groups": [
            {
                "name": "selfheal-sli",
                "rules": [
                    {"type": "recording", "name": "selfheal:http_requests:rate1m"},
                    {"type": "recording", "name": "selfheal:http_errors:rate1m"},
                ],
            }
        ]
    },
}


def handler(queries_file, ratio):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server API)
            url = urllib.parse.urlparse(self.path)
            if url.path == "/api/v1/rules":
                body = RULES
            elif url.path == "/api/v1/query":
                query = urllib.parse.parse_qs(url.query).get("query", [""])[0]
                with open(queries_file, "a", encoding="utf-8") as out:
                    out.write(query + "\n")
                sample = {"metric": {}, "value": [0, ratio]}
                body = {"status": "success", "data": {"resultType": "vector", "result": [sample]}}
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__.strip().splitlines()[-1])
    port, queries_file, ratio = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    http.server.HTTPServer(("127.0.0.1", port), handler(queries_file, ratio)).serve_forever()


if __name__ == "__main__":
    main()
