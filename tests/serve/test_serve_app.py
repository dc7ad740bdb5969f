"""The app factory in process: no torch, no process-global state, the small pure helpers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.serve.fixtures import MODEL
from toolkit.paths import sample_image
from toolkit.serve.auth import host_name, same_origin
from toolkit.serve.errors import ApiError
from toolkit.serve.render import parse_options
from toolkit.serve.settings import ServeSettings, is_loopback


def _xml(root: Path) -> Path:
    return root / "public" / MODEL / "FP32" / f"{MODEL}.xml"


def test_serve_runs_where_torch_cannot_be_imported(serve_root: Path) -> None:
    """A serving install has no torch: block it at import time, build the app, matte a photo."""
    script = textwrap.dedent(
        f"""
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "onnx", "onnxruntime", "onnxscript"):
                    raise ImportError("blocked: " + name)
                return None

        sys.meta_path.insert(0, Block())
        import toolkit.cli  # every command registered, serve's included
        from fastapi.testclient import TestClient
        from toolkit.serve.app import create_app
        from toolkit.serve.settings import ServeSettings
        from pathlib import Path

        app = create_app(ServeSettings(xml=Path({str(_xml(serve_root))!r})))
        with TestClient(app, base_url="http://127.0.0.1") as client:
            r = client.post("/v1/matte", content=open({str(sample_image())!r}, "rb").read(),
                            headers={{"Content-Type": "image/png"}})
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx", "onnxruntime"))
        print("STATUS", r.status_code, "HEAVY", heavy)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert "STATUS 200 HEAVY []" in proc.stdout, (proc.stdout, proc.stderr[-2000:])


def test_two_apps_in_one_process_keep_their_own_settings(serve_root: Path) -> None:
    from fastapi.testclient import TestClient

    from toolkit.serve.app import create_app

    open_app = create_app(ServeSettings(xml=_xml(serve_root), max_upload_bytes=10_000_000))
    locked = create_app(ServeSettings(xml=_xml(serve_root), token="abc", max_upload_bytes=1000))
    photo = sample_image().read_bytes()
    headers = {"Content-Type": "image/png"}
    with (
        TestClient(open_app, base_url="http://127.0.0.1") as a,
        TestClient(locked, base_url="http://127.0.0.1") as b,
    ):
        assert a.post("/v1/matte", content=photo, headers=headers).status_code == 200
        assert b.post("/v1/matte", content=photo, headers=headers).status_code == 401
        r = b.post("/v1/matte", content=photo, headers={**headers, "Authorization": "Bearer abc"})
        assert r.status_code == 413  # its own 1000-byte limit
        assert a.get("/v1/info").json()["token_required"] is False
        assert b.get("/v1/info").json()["token_required"] is True
    assert open_app.state.engine is not locked.state.engine


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("127.1", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_host_and_origin_helpers() -> None:
    assert host_name("127.0.0.1:8080") == "127.0.0.1"
    assert host_name("[::1]:8080") == "[::1]"
    assert host_name("LOCALHOST") == "localhost"
    assert host_name("evil.example:80") == "evil.example"
    assert same_origin("http://127.0.0.1:8080", "127.0.0.1:8080")
    assert not same_origin("http://127.0.0.1:8081", "127.0.0.1:8080")
    assert not same_origin("http://evil.example", "127.0.0.1:8080")
    assert not same_origin("null", "127.0.0.1:8080")


def test_render_options() -> None:
    assert parse_options(None, None, None).output == "alpha"
    opts = parse_options("composite", "jpg", "#102030")
    assert (
        opts.fmt == "jpeg" and opts.background is not None and opts.background.color == (48, 32, 16)
    )
    assert parse_options("composite", None, None).background is not None  # OMZ's colour
    for args in (
        ("rgba", "jpeg", None),
        ("x", None, None),
        ("alpha", "bmp", None),
        ("alpha", None, "red"),
        ("composite", None, "/etc/passwd"),
        ("composite", None, "x" * 100),
    ):
        with pytest.raises(ApiError) as err:
            parse_options(*args)
        assert err.value.status == 400


def test_many_background_colours_do_not_grow_memory() -> None:
    """Each composite colour gets lookup tables; a server's clients can ask for millions."""
    import numpy as np

    from toolkit.matting import prepost

    frame = np.zeros((8, 8, 3), np.uint8)
    alpha = np.full((8, 8), 128, np.uint8)
    for i in range(200):
        bg = prepost.Background(color=(i, 255 - i, 7)).render(frame)
        out = prepost.composite(frame, alpha, bg)
        assert int(out[0, 0, 0]) == (i * 127 + 127) // 255
    assert len(prepost._BLEND_TABLES) <= prepost._BLEND_TABLES_KEPT


def test_pixel_budget_and_queue_places_last_until_the_work_ends(serve_root: Path) -> None:
    """A second image waits while the first holds the budget; a job's place and pixels come
    back only when its thread work has finished, even if the request gave up first."""
    import asyncio
    import threading

    from toolkit.serve.engine import Engine

    engine = Engine(ServeSettings(xml=_xml(serve_root), max_pixels=1000, max_queue=4))
    release = threading.Event()

    async def scenario() -> None:
        with engine.admit() as first:
            await first.reserve(800)
            with engine.admit() as second:
                waiting = asyncio.ensure_future(second.reserve(800))
                await asyncio.sleep(0.2)
                assert not waiting.done()  # 800 + 800 > 1000
                slow = asyncio.ensure_future(first.cpu(release.wait, 30))
                await asyncio.sleep(0.1)
                slow.cancel()  # the request gives up; its thread goes on
        # first's handler has returned, but its thread still runs: place and pixels kept
        assert engine.admitted >= 1 and engine.pixels_in_use >= 800
        assert not waiting.done()
        release.set()
        await asyncio.wait_for(waiting, 10)  # now the second gets its pixels
        await asyncio.sleep(0.1)

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        engine.close()
    assert engine.admitted == 0
