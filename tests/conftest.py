"""Fixtures: a real ComfyUI server with the DeT pack and the test-only nodes, a tiny HunyuanVideo checkpoint in
its models folder, and a small client. The server runs from an isolated base directory (its own models, input,
output, user and custom_nodes folders), so tests never touch the host's own folders."""

from __future__ import annotations

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
SHARED_EXAMPLES = os.path.join(os.path.dirname(ROOT), "shared", "mtbench_examples")
ARTIFACTS = os.path.join(ROOT, "test_artifacts")
# the session's server reads the shared footage by absolute path (an opt-in of the pack, off by default; a test
# starts a server without it to check that nothing outside ComfyUI's folders can be read)
os.environ["DET_ALLOW_ABSOLUTE_PATHS"] = "1"

sys.path.insert(0, ROOT)
sys.path.insert(0, TESTS)

from det_tools.client import ComfyClient  # noqa: E402
from det_tools.host import ComfyServer, find_host_dir, prepare_base_dir  # noqa: E402


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture(scope="session")
def comfy_host() -> str:
    from devtools.tiny_models import import_comfy

    path = find_host_dir()
    import_comfy(path)
    return path


@pytest.fixture(scope="session")
def comfy_base(comfy_host, tmp_path_factory) -> str:
    from devtools.tiny_models import TINY_HV_FILE, write_tiny_hunyuan_video

    base = prepare_base_dir(str(tmp_path_factory.mktemp("comfy_base")),
                            {"det_test_nodes": os.path.join(TESTS, "comfy_test_nodes")})
    write_tiny_hunyuan_video(os.path.join(base, "models", "diffusion_models", TINY_HV_FILE), seed=0)
    return base


@pytest.fixture(scope="session")
def comfy_server(comfy_host, comfy_base):
    os.makedirs(ARTIFACTS, exist_ok=True)
    server = ComfyServer(comfy_host, base_dir=comfy_base,
                         log_path=os.path.join(ARTIFACTS, f"comfyui-server-{os.getpid()}.log"),
                         env={"DET_DIST_CPU": "1"})  # Train DeT Adapter's gpus > 1 runs CPU ranks (gloo) here
    server.start(timeout=240)
    yield server
    server.stop()


@pytest.fixture
def comfy(comfy_server, request) -> ComfyClient:
    """A client of the session's server; prints the server log's tail when the test fails."""
    start = len(comfy_server.log_text())
    yield ComfyClient(comfy_server.url)
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"\n----- ComfyUI server log during {request.node.name} -----")
        print(comfy_server.log_text()[start:][-8000:])
    assert comfy_server.alive(), "the ComfyUI server died during the test:\n" + comfy_server.log_tail()


@pytest.fixture(scope="session")
def input_dir(comfy_base) -> str:
    return os.path.join(comfy_base, "input")


def need_shared(path: str) -> str:
    """`path` in the shared real footage beside the clone: a test that needs it skips without it, naming it, except
    under CI=true, where missing footage is a failure."""
    if not os.path.exists(path):
        message = f"{path} is missing (the shared MTBench footage beside the clone)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI must have it")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def mtbench_examples() -> str:
    return need_shared(SHARED_EXAMPLES)


@pytest.fixture(scope="session")
def pack_cases(tmp_path_factory) -> str:
    """The pack's own MTBench cases in the flat layout (tests/media.py `PACK_CASES`: a blue square on a figure eight,
    a red disc on a zig-zag, 49 frames at 720 x 480 with masks and exact tracks), drawn for this session: the tests
    that need footage but not real footage run from a bare clone."""
    from media import PACK_CASES, world_case

    root = str(tmp_path_factory.mktemp("pack_cases"))
    for name in PACK_CASES:
        world_case(root, name)
    return root


def inspect_report(result, node_id: str) -> dict:
    """The JSON that a DeTTestInspect node reported."""
    return json.loads(result.outputs[node_id]["text"][0])


@pytest.fixture
def tiny_transformer(comfy_host):
    """ComfyUI's HunyuanVideo transformer at the tiny test size, seeded weights, in this process."""
    from devtools.tiny_models import tiny_transformer

    return tiny_transformer(0)


def tiny_inputs(t_lat=3, h_lat=6, w_lat=8, seed=0):
    """Latent, timestep, text and pooled inputs for the tiny transformer."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return dict(x=torch.randn(1, 16, t_lat, h_lat, w_lat, generator=g), timestep=torch.tensor([500.0]),
                context=torch.randn(1, 5, 32, generator=g), y=torch.randn(1, 768, generator=g),
                guidance=torch.tensor([6.0]))


@pytest.fixture(scope="session")
def cotracker_file(comfy_base):
    """A CoTracker3 checkpoint with random weights in the official layout, in the server's models/cotracker/
    (plus one that lacks the correlation MLP, for the error path)."""
    from devtools.tiny_models import write_random_cotracker3

    folder = os.path.join(comfy_base, "models", "cotracker")
    write_random_cotracker3(os.path.join(folder, "det_test_offline.pth"), seed=0)
    write_random_cotracker3(os.path.join(folder, "not_cotracker.pth"), seed=0, drop="corr_mlp")
    return "det_test_offline.pth"
