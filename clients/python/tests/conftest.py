"""Makes `berth_client` importable from the source tree, generating its gRPC
code first when clients/python/generate.sh has not been run yet."""

import os
import pathlib
import subprocess
import sys

PYTHON_DIR = pathlib.Path(__file__).resolve().parent.parent
REPO = PYTHON_DIR.parent.parent

if not (PYTHON_DIR / "berth_client" / "_gen" / "berth" / "gateway" / "v1" / "gateway_pb2.py").exists():
    subprocess.run(
        [str(PYTHON_DIR / "generate.sh")],
        check=True,
        env={**os.environ, "PYTHON": sys.executable},
    )

if str(PYTHON_DIR) not in sys.path:
    sys.path.insert(0, str(PYTHON_DIR))
