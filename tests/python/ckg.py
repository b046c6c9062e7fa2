"""Helpers of the pytest suites: run `ckptguard scan` (CKPTGUARD_CLI, set by
CTest from $<TARGET_FILE:ckptguard>) and the real loaders in a subprocess."""
import json
import os
import subprocess
import sys
import uuid

CLI = os.environ.get("CKPTGUARD_CLI", "")
DATA = os.environ.get("CKPTGUARD_TEST_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "data"))
PYTHON = "/usr/bin/python3"


def scan(path):
    """The JSON report of one file: {'verdict', 'findings', ...}."""
    assert CLI, "CKPTGUARD_CLI is not set (run through ctest)"
    out = subprocess.run([CLI, "scan", "--format", "json", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode in (0, 1, 2), out.stderr
    return json.loads(out.stdout)["files"][0]


def run_cli(*args, timeout=300):
    """Runs `ckptguard ARGS...`: the CompletedProcess, stdout and stderr as bytes."""
    assert CLI, "CKPTGUARD_CLI is not set (run through ctest)"
    return subprocess.run([CLI, *args], capture_output=True, timeout=timeout)


def describe(report):
    lines = [report["path"] + " [" + report["verdict"] + "]"]
    for f in report.get("findings", []):
        lines.append("  %s %s %s: %s" % (f["rule"], f["severity"], f.get("global", ""), f["message"]))
    if report.get("error"):
        lines.append("  error: %s" % report["error"])
    return "\n".join(lines)


def marker_path():
    """A marker file no other test or run uses."""
    return "/tmp/ckptguard-pwned-%d-%s" % (os.getpid(), uuid.uuid4().hex)


LOADERS = {
    # name -> Python source that loads the file at sys.argv[1] the way a user would.
    "pickle.loads": "import pickle,sys; pickle.loads(open(sys.argv[1],'rb').read())",
    "pickle._loads": "import pickle,sys; pickle._loads(open(sys.argv[1],'rb').read())",
    "pickle.load": "import pickle,sys; pickle.load(open(sys.argv[1],'rb'))",
    "torch.load": "import torch,sys; torch.load(sys.argv[1])",
    "numpy.load": "import numpy,sys; numpy.load(sys.argv[1], allow_pickle=True)",
    "joblib.load": "import joblib,sys; joblib.load(sys.argv[1])",
    "torch.load(weights_only)": "import torch,sys; torch.load(sys.argv[1], weights_only=True)",
    "torch.jit.load": "import torch,sys; torch.jit.load(sys.argv[1])",
    "_load_for_lite_interpreter": "import torch,torch.jit.mobile,sys; torch.jit.mobile._load_for_lite_interpreter(sys.argv[1])",
    # numpy.load called again on one open file until it ends (arrays appended
    # one after another, as numpy.save to an open file writes them).
    "numpy.load*": "import numpy,sys\nf=open(sys.argv[1],'rb')\nwhile f.peek(1):\n  numpy.load(f, allow_pickle=True)",
}


# The real loaders run in children of one multiprocessing fork server that
# imported pickle, numpy, torch and joblib once: `import torch` alone costs
# about 2 s per process, and the suites prove hundreds of payloads. Each load
# is still a separate process (forked from the server, never from pytest), so a
# payload that crashes, hangs or exits kills only its own child.
_PRELOAD = ["pickle", "numpy", "torch", "torch.jit.mobile", "joblib"]
_context = None


def _loader_context():
    global _context
    if _context is None:
        import multiprocessing
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(_PRELOAD)
    return _context


def _run_loader(source, path, cwd):
    """In the forked child: runs the loader's source as `python3 -c SOURCE
    PATH` would, with the output discarded."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if cwd:
        os.chdir(cwd)
    sys.argv = ["-c", str(path)]
    try:
        exec(compile(source, "<loader>", "exec"), {"__name__": "__main__"})
    except BaseException:  # errors after the payload ran are expected
        pass
    os._exit(0)


def load_runs_payload(path, marker, loader="pickle.loads", cwd=None, timeout=120):
    """Loads `path` with a real loader in a child process (errors after the
    payload ran are expected) and says whether the marker file appeared; the
    marker is removed either way."""
    assert sys.executable == PYTHON or os.path.realpath(sys.executable) == os.path.realpath(PYTHON), \
        "the suites run under %s (Debian's torch and numpy), not %s" % (PYTHON, sys.executable)
    try:
        child = _loader_context().Process(target=_run_loader, args=(LOADERS[loader], str(path), cwd and str(cwd)))
        child.start()
        child.join(timeout)
        if child.is_alive():
            child.kill()
            child.join()
        return os.path.exists(marker)
    finally:
        if os.path.exists(marker):
            os.remove(marker)
