"""Whole-process wall time of a command, spawned with posix_spawn (no shell,
no pipes, output to /dev/null): best and median of N runs, with /bin/true
measured the same way as the floor. Users run the CLI once per file, so
start-up counts.

Usage: python3 bench/spawn_time.py N COMMAND [ARGS...]
  e.g. python3 bench/spawn_time.py 40 build/release/cli/ckptguard scan --format json tiny.pkl"""
import os, sys, time
def run(argv, n):
    xs = []
    devnull = os.open(os.devnull, os.O_WRONLY)
    fa = [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
    for _ in range(n):
        a = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=fa)
        os.waitpid(pid, 0)
        xs.append(time.perf_counter() - a)
    xs.sort()
    return xs[0] * 1000, xs[len(xs) // 2] * 1000
n = int(sys.argv[1])
print("/bin/true best %.2f ms median %.2f ms" % run(["/bin/true"], n))
print("%s best %.2f ms median %.2f ms" % ((" ".join(sys.argv[2:]),) + run(sys.argv[2:], n)))
