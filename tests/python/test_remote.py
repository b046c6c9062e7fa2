"""`ckptguard scan` of inputs that are not paths: https:// URLs, hf:// Hugging
Face repositories and standard input. A local HTTPS server laid out like the
hub's API (as a mirror at HF_ENDPOINT is), with a certificate made by
openssl, serves a benign checkpoint, a hostile pickle and a README; file
downloads redirect to another origin ("localhost", as the hub's CDN is
another host) that must never see the token."""
import http.server
import json
import os
import pathlib
import ssl
import subprocess
import threading
import urllib.parse

import pytest

from ckg import CLI, DATA

CORPUS = pathlib.Path(DATA) / "corpus"
SHA = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_secret_token"
FILES = {
    "pytorch_model.bin": (CORPUS / "benign" / "mlp.params").read_bytes(),
    "sub/evil weights.pkl": (CORPUS / "malicious" / "os_system_p0.pkl").read_bytes(),
    "README.md": b"# a model card\n",
    "config.json": b'{"hidden_size": 4}\n',
}


class Hub(http.server.BaseHTTPRequestHandler):
    cdn_headers = []  # headers of every request that reached the CDN origin
    api_headers = []

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", content_type="application/json", location=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if location:
            self.send_header("Location", location)
        self.end_headers()
        self.wfile.write(body)

    def listing(self, files, sha=SHA):
        return json.dumps({"id": "org/repo", "sha": sha, "siblings": [{"rfilename": f} for f in files]}).encode()

    def do_GET(self):
        path = urllib.parse.unquote(self.path)
        port = self.server.server_address[1]
        if path.startswith("/api/"):
            Hub.api_headers.append(dict(self.headers))
        if path == "/api/models/org/repo":
            return self.answer(200, self.listing(FILES))
        if path == "/api/models/org/repo/revision/v1.0":
            return self.answer(200, self.listing(["pytorch_model.bin"], sha="f" * 40))
        if path == "/api/datasets/org/data":
            return self.answer(200, self.listing(["sub/evil weights.pkl"]))
        if path == "/api/models/org/private":
            if self.headers.get("Authorization") != "Bearer " + TOKEN:
                return self.answer(401, b'{"error": "Invalid credentials"}')
            return self.answer(200, self.listing(["pytorch_model.bin"]))
        if path == "/api/models/org/escape":
            return self.answer(200, self.listing(["../../../etc/passwd", "pytorch_model.bin"]))
        if path == "/api/models/org/empty":
            return self.answer(200, self.listing([]))
        for prefix in ("/org/repo/resolve/", "/org/private/resolve/", "/org/escape/resolve/", "/datasets/org/data/resolve/"):
            if path.startswith(prefix):
                revision, name = path[len(prefix):].split("/", 1)
                if revision not in (SHA, "f" * 40):
                    return self.answer(404, b"unknown revision")
                # The hub redirects file downloads to its CDN: another origin.
                quoted = urllib.parse.quote(name)
                return self.answer(302, location="https://localhost:%d/cdn/%s" % (port, quoted))
        if path.startswith("/cdn/"):
            Hub.cdn_headers.append(dict(self.headers))
            name = path[len("/cdn/"):]
            if name not in FILES:
                return self.answer(404, b"no such file")
            return self.answer(200, FILES[name], content_type="application/octet-stream")
        return self.answer(404, b"not found")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hub")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "2", "-subj", "/CN=ckptguard test hub", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"endpoint": "https://127.0.0.1:%d" % server.server_address[1], "ca": str(cert)}
    server.shutdown()


def scan(hub, tmp_path, *args, token=None, stdin=None):
    env = dict(os.environ)
    env["HF_ENDPOINT"] = hub["endpoint"]
    env.pop("HF_TOKEN", None)
    env.pop("HUGGING_FACE_HUB_TOKEN", None)
    if token:
        env["HF_TOKEN"] = token
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    env["TMPDIR"] = str(tmp)
    out = subprocess.run([CLI, "scan", "--format", "json", "--ca-file", hub["ca"], *args], env=env,
                         capture_output=True, timeout=120, input=stdin)
    assert list(tmp.iterdir()) == [], "temporary downloads left behind"
    return out.returncode, json.loads(out.stdout), out.stderr.decode()


def verdicts(report):
    return {f["path"]: f["verdict"] for f in report["files"]}


def test_a_hub_repository_is_listed_and_every_model_file_scanned(hub, tmp_path):
    Hub.cdn_headers.clear()
    code, report, err = scan(hub, tmp_path, "hf://org/repo")
    assert code == 1, err
    assert verdicts(report) == {"hf://org/repo/pytorch_model.bin": "safe", "hf://org/repo/sub/evil weights.pkl": "dangerous"}
    assert "left out 2 file(s) that are not model files" in err  # README.md, config.json
    assert len(Hub.cdn_headers) == 4  # every file was fetched, through the redirect


def test_include_revision_and_datasets(hub, tmp_path):
    code, report, _ = scan(hub, tmp_path, "--include", "*.bin", "hf://org/repo")
    assert code == 0 and verdicts(report) == {"hf://org/repo/pytorch_model.bin": "safe"}
    code, report, _ = scan(hub, tmp_path, "hf://org/repo@v1.0")
    assert code == 0 and verdicts(report) == {"hf://org/repo@v1.0/pytorch_model.bin": "safe"}
    code, report, _ = scan(hub, tmp_path, "hf://datasets/org/data")
    assert code == 1 and verdicts(report) == {"hf://datasets/org/data/sub/evil weights.pkl": "dangerous"}


def test_the_token_goes_to_the_hub_only(hub, tmp_path):
    code, report, err = scan(hub, tmp_path, "hf://org/private")
    assert code == 2
    assert report["files"][0]["findings"][0]["rule"] == "CKG-W006"
    assert "set HF_TOKEN" in report["files"][0]["findings"][0]["message"]
    Hub.cdn_headers.clear()
    Hub.api_headers.clear()
    code, report, err = scan(hub, tmp_path, "hf://org/private", token=TOKEN)
    assert code == 0, err
    assert Hub.api_headers[-1].get("Authorization") == "Bearer " + TOKEN
    assert Hub.cdn_headers and all("Authorization" not in h for h in Hub.cdn_headers)


def test_urls_stdin_and_failures(hub, tmp_path):
    url = hub["endpoint"].replace("127.0.0.1", "localhost") + "/cdn/" + urllib.parse.quote("sub/evil weights.pkl")
    code, report, _ = scan(hub, tmp_path, url, hub["endpoint"] + "/cdn/pytorch_model.bin")
    assert code == 1
    assert verdicts(report) == {url: "dangerous", hub["endpoint"] + "/cdn/pytorch_model.bin": "safe"}
    code, report, _ = scan(hub, tmp_path, hub["endpoint"] + "/cdn/missing.pt")
    assert code == 2 and "HTTP 404" in report["files"][0]["findings"][0]["message"]
    code, report, _ = scan(hub, tmp_path, "-", stdin=FILES["sub/evil weights.pkl"])
    assert code == 1 and verdicts(report) == {"-": "dangerous"}
    # A listing that names a path outside the repository: refused, not fetched.
    code, report, _ = scan(hub, tmp_path, "hf://org/escape")
    assert code == 2
    assert verdicts(report)["hf://org/escape/pytorch_model.bin"] == "safe"
    assert verdicts(report)["hf://org/escape/../../../etc/passwd"] == "error"
    code, report, _ = scan(hub, tmp_path, "hf://org/empty")
    assert code == 2 and report["files"][0]["findings"][0]["rule"] == "CKG-W008"
    code, report, _ = scan(hub, tmp_path, "hf://not/a/repo/path")
    assert code == 2


def test_the_certificate_is_checked(hub, tmp_path):
    env = dict(os.environ, HF_ENDPOINT=hub["endpoint"], TMPDIR=str(tmp_path))
    out = subprocess.run([CLI, "scan", "--format", "json", "hf://org/repo"], env=env, capture_output=True, timeout=120)
    assert out.returncode == 2
    assert "certificate" in json.loads(out.stdout)["files"][0]["findings"][0]["message"]
