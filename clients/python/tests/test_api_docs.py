"""docs/api.md is generated from the .proto comments by docs/gen_api_docs.py
and must be up to date (no daemon needed)."""

import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
GEN = REPO / "docs" / "gen_api_docs.py"
API_MD = REPO / "docs" / "api.md"

pytestmark = pytest.mark.skipif(shutil.which("protoc") is None, reason="needs protoc (protobuf-compiler)")


def test_api_md_is_up_to_date(tmp_path):
    fresh = tmp_path / "api.md"
    subprocess.run([sys.executable, str(GEN), "-o", str(fresh)], check=True)
    if fresh.read_text() != API_MD.read_text():
        check = subprocess.run([sys.executable, str(GEN), "--check"], capture_output=True, text=True)
        pytest.fail(f"docs/api.md is stale: run `python3 docs/gen_api_docs.py`\n{check.stdout[-4000:]}")


def test_api_md_documents_every_public_rpc_and_message():
    from berth_client._gen.berth.gateway.v1 import gateway_pb2 as pb

    text = API_MD.read_text()
    for service in pb.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            assert f'<a id="{method.full_name}"></a>' in text, method.full_name
    for message in pb.DESCRIPTOR.message_types_by_name.values():
        assert f'<a id="{message.full_name}"></a>' in text, message.full_name
    # A comment from the proto, with its markup kept safe.
    assert "Start a created or exited container." in text
    assert "&lt;state&gt;/berth.sock" in text
    # The internal part is marked as such.
    internal = text.index("# Part 2: internal services")
    assert text.index("## Internal: `berth.tasks.v1`") > internal
    assert text.index("## Public API: `berth.gateway.v1`") < internal
