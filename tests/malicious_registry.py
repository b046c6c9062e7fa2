#!/usr/bin/python3
"""A registry that lies, for tests/registry_pull_test.cc.

It answers GET requests from a routes file that the test writes (and may
rewrite between two pulls: the file is read again on every request):

    {"<target or path>": {"status": 200, "content_type": "...", "file": "/path/to/body"}, ...}

A request's full target ("/v1/keys?format=json") is looked up first, then
its path alone ("/v1/checkpoints/<sha256>"). Anything else is a JSON 404.
The test fills the routes with genuine answers of a real ckptguardd and then
substitutes some of them (blobs, bundles, keys, records), as a hostile
registry or network would.

usage: malicious_registry.py ROUTES_JSON PORT_FILE
"""

import http.server
import json
import os
import sys


def main():
    routes_path, port_file = sys.argv[1], sys.argv[2]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            with open(routes_path, encoding="utf-8") as f:
                routes = json.load(f)
            route = routes.get(self.path) or routes.get(self.path.split("?", 1)[0])
            if route is None:
                status = 404
                content_type = "application/json"
                body = json.dumps({"error": "no such route: " + self.path, "status": 404}).encode()
            else:
                status = route.get("status", 200)
                content_type = route.get("content_type", "application/json")
                with open(route["file"], "rb") as f:
                    body = f.read()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # quiet: the test reads the client's output
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp = port_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(str(server.server_address[1]))
    os.rename(tmp, port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
