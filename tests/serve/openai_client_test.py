"""Runs the official openai npm client (scripts/serve_client, installed by `npm ci` into its
git-ignored node_modules) against `moe serve`. Usage: openai_client_test.py MOE_BINARY"""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import Server, check, make_chat_model, temp_dir  # noqa: E402

root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
client = os.path.join(root, "scripts", "serve_client")


def main():
    moe = sys.argv[1]
    check(shutil.which("node") and shutil.which("npm"), "node and npm are needed (apt-get install -y nodejs npm)")
    mod = os.path.join(client, "node_modules", "openai", "package.json")
    lock = os.path.join(client, "package-lock.json")
    if not os.path.exists(mod) or os.path.getmtime(mod) < os.path.getmtime(lock):
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=client, capture_output=True,
                           text=True, timeout=300)
        check(r.returncode == 0, "npm ci failed in scripts/serve_client: " + r.stderr[-2000:])
    work = temp_dir()
    try:
        model = make_chat_model(moe, work)
        srv = Server(moe, model, "--threads", "1", "--api-key", "test-key")
        try:
            r = subprocess.run(["node", os.path.join(client, "openai_client_test.mjs"), str(srv.port),
                                os.path.basename(model)], capture_output=True, text=True, timeout=120)
            print(r.stdout + r.stderr)
            check(r.returncode == 0, "the openai client test failed")
        finally:
            srv.kill()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
