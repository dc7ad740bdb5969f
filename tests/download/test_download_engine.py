"""The download library in-process: the public API, locking, TLS trust from the environment,
HTML recognition, retry timing policy and the progress reporters."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from tests.download.fixtures_http import (
    Fault,
    FileServer,
    FileSpec,
    ModelSpec,
    payload,
    write_model,
)
from toolkit.download import (
    DownloadError,
    DownloadOptions,
    FetchSettings,
    JsonReporter,
    Outcome,
    RetryPolicy,
    RichReporter,
    TextReporter,
    Timeouts,
    ensure_downloaded,
    fetch_model,
    make_session,
    verify_file,
)
from toolkit.download.config import ModelConfig, discover
from toolkit.download.htmlpage import describe_html, drive_confirm_form, looks_like_html
from toolkit.download.lock import file_lock
from toolkit.download.reporters import make_reporter
from toolkit.download.retry import parse_retry_after

FAST = FetchSettings(
    num_attempts=3, timeouts=Timeouts(connect=2, read=2), retry=RetryPolicy(base=0.01)
)


def config_of(model: ModelSpec) -> ModelConfig:
    return discover([model.models_dir])[model.name]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def test_fetch_model_reports_outcomes(served_model, tmp_path: Path) -> None:
    model = served_model()
    config = config_of(model)
    first = fetch_model(config, tmp_path / "o", DownloadOptions(settings=FAST))
    assert first.ok and [f.outcome for f in first.files] == [Outcome.DOWNLOADED]
    again = fetch_model(config, tmp_path / "o", DownloadOptions(settings=FAST))
    assert [f.outcome for f in again.files] == [Outcome.KEPT]
    assert verify_file(first.files[0].path, config.files[0])


def test_cache_outcome(served_model, tmp_path: Path) -> None:
    model = served_model()
    config = config_of(model)
    options = DownloadOptions(cache_dir=tmp_path / "cache", settings=FAST)
    fetch_model(config, tmp_path / "o1", options)
    result = fetch_model(config, tmp_path / "o2", options)
    assert [f.outcome for f in result.files] == [Outcome.CACHE]


def test_ensure_downloaded_returns_the_checkpoint_path(served_model, tmp_path: Path) -> None:
    model = served_model()
    path = ensure_downloaded(config_of(model), tmp_path / "o", DownloadOptions(settings=FAST))
    assert path == tmp_path / "o" / "public" / model.name / model.files[0].name
    assert path.read_bytes() == model.data


def test_ensure_downloaded_raises_one_line_download_error(served_model, tmp_path: Path) -> None:
    model = served_model(Fault("html", times=-1))
    with pytest.raises(DownloadError, match="HTML page") as info:
        ensure_downloaded(config_of(model), tmp_path / "o", DownloadOptions(settings=FAST))
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 1


def test_threads_fetching_one_file_take_turns(served_model, tmp_path: Path) -> None:
    model = served_model(size=600_000, chunk_delay=0.005)
    config = config_of(model)
    results = []

    def run() -> None:
        results.append(
            fetch_model(config, tmp_path / "o", DownloadOptions(settings=FAST), session=make_session())
        )  # fmt: skip

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r.ok for r in results) and len(results) == 3
    outcomes = sorted(r.files[0].outcome.value for r in results if r.files[0].outcome)
    assert outcomes == ["downloaded", "kept", "kept"]
    assert model.path_in(tmp_path / "o").read_bytes() == model.data


def test_file_lock_serialises_and_cleans_up(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    order: list[str] = []
    waited = threading.Event()
    inside = threading.Event()

    def second() -> None:
        with file_lock(lock, on_wait=waited.set):
            order.append("second")

    with file_lock(lock):
        inside.set()
        t = threading.Thread(target=second)
        t.start()
        assert waited.wait(10)  # the second holder noticed the lock is busy
        order.append("first")
    t.join(10)
    assert order == ["first", "second"]
    assert not lock.exists()


def test_ca_bundle_comes_from_the_environment(
    https_server: FileServer,
    self_signed_cert: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = payload(40_000, 5)
    url = https_server.add("/secure.ckpt", data)
    model = write_model(tmp_path / "models", "tls-model", [(FileSpec("t.ckpt", data), [url])])
    config = config_of(model)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    untrusted = fetch_model(config, tmp_path / "o", DownloadOptions(settings=FAST))
    assert not untrusted.ok and "TLS error" in (untrusted.files[0].error or "")
    assert not model.path_in(tmp_path / "o").exists()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(self_signed_cert[0]))
    trusted = fetch_model(config, tmp_path / "o", DownloadOptions(settings=FAST))
    assert trusted.ok, trusted.files[0].error
    assert model.path_in(tmp_path / "o").read_bytes() == data


def test_unsafe_file_name_is_refused_by_the_config(tmp_path: Path) -> None:
    from toolkit.errors import ConfigError

    write_model(tmp_path / "m", "evil", [(FileSpec("../../etc/x", b"x"), ["http://x.invalid/"])])
    with pytest.raises(ConfigError, match=r"evil\.yml.*files\.0\.name"):
        discover([tmp_path / "m"])


# -- HTML recognition ----------------------------------------------------------------------

LEGACY_CKPT_HEAD = bytes.fromhex("80028a0a6cfc9c46f9206aa8501900")


@pytest.mark.parametrize(
    ("head", "content_type", "is_html"),
    [
        (LEGACY_CKPT_HEAD + b"\0" * 100, "application/octet-stream", False),
        (LEGACY_CKPT_HEAD + b"<html>", "text/html", False),  # mislabelled binary
        (b"PK\x03\x04" + b"\0" * 100, None, False),
        (b"import torch\n", "text/x-python", False),
        (b"<!DOCTYPE html><html>", "application/octet-stream", True),
        (b"\xef\xbb\xbf\n  <html lang='en'>", None, True),
        (b"<HEAD><title>x</title>", None, True),
        (b"<div>oops</div>", "text/html; charset=utf-8", True),
    ],
)
def test_looks_like_html(head: bytes, content_type: str | None, is_html: bool) -> None:
    assert looks_like_html(head, content_type) is is_html


def test_describe_html_names_drive_pages() -> None:
    from tests.download.fixtures_http import DRIVE_FORM, DRIVE_QUOTA_PAGE, DRIVE_VIRUS_PAGE

    assert "quota is exceeded" in describe_html(DRIVE_QUOTA_PAGE.encode())
    assert "confirmation page" in describe_html(DRIVE_VIRUS_PAGE.format(form="").encode())
    assert describe_html(b"<html><title> Error 404 \n (Not Found)</title>") == (
        "page title 'Error 404 (Not Found)'"
    )
    page = DRIVE_VIRUS_PAGE.format(
        form=DRIVE_FORM.format(action="https://drive.usercontent.google.com/download", id="ABC", uuid="u-1")
    ).encode()  # fmt: skip
    form = drive_confirm_form(page)
    assert form is not None
    assert form.action == "https://drive.usercontent.google.com/download"
    assert form.fields == {"id": "ABC", "export": "download", "confirm": "t", "uuid": "u-1"}


def test_drive_form_to_a_foreign_host_is_not_followed(
    http_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.download.fixtures_http import DRIVE_FORM, DRIVE_VIRUS_PAGE

    page = DRIVE_VIRUS_PAGE.format(
        form=DRIVE_FORM.format(action="http://evil.invalid/download", id="x", uuid="u")
    ).encode()
    drive_url = http_server.add("/fake-uc", page, Fault("html", times=-1, body=page))
    monkeypatch.setenv("MODNET_TOOLS_GDRIVE_URL", drive_url)
    data = payload(1000)
    model = write_model(
        tmp_path / "m", "drv", [(FileSpec("d.ckpt", data), [{"$type": "google_drive", "id": "abcdefghijk"}])]
    )  # fmt: skip
    result = fetch_model(config_of(model), tmp_path / "o", DownloadOptions(settings=FAST))
    assert "unexpected host 'evil.invalid'" in (result.files[0].error or "")
    assert [r.path for r in http_server.log] == ["/fake-uc"]


# -- retry policy --------------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=40), st.floats(min_value=0.0, max_value=30.0))
def test_backoff_is_exponential_capped_and_jittered(failures: int, base: float) -> None:
    policy = RetryPolicy(base=base, cap=60.0)
    ceiling = min(60.0, base * 2 ** (failures - 1))
    wait = policy.backoff(failures)
    assert ceiling / 2 <= wait <= ceiling


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") == 0.0
    when = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert parse_retry_after(when, now=1445412480.0 - 30) == pytest.approx(30.0)


# -- reporters -----------------------------------------------------------------------------


def test_rich_reporter_draws_bars_with_bytes_and_speed(served_model, tmp_path: Path) -> None:
    model = served_model(size=300_000)
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=140, color_system=None)
    reporter = RichReporter(console=console)
    try:
        result = fetch_model(config_of(model), tmp_path / "o", DownloadOptions(settings=FAST), reporter=reporter)  # fmt: skip
    finally:
        reporter.close()
    assert result.ok
    screen = buffer.getvalue()
    assert model.files[0].name in screen
    assert "300.0/300.0 kB" in screen  # bytes done / total
    assert "/s" in screen  # transfer speed


def test_make_reporter_picks_by_terminal_and_format() -> None:
    assert isinstance(make_reporter("json", tty=True), JsonReporter)
    assert isinstance(make_reporter("text", tty=True), RichReporter)
    chosen = make_reporter("text", tty=False)
    assert isinstance(chosen, TextReporter) and not isinstance(chosen, RichReporter)


def test_json_reporter_writes_only_events_and_errors_to_stderr() -> None:
    out, err = io.StringIO(), io.StringIO()
    reporter = JsonReporter(out=out, err=err)
    reporter.model_begin("m", 1)
    reporter.section("m", "f", "Downloading f")  # human-only: not in the stream
    reporter.note("m", "f", "retrying")
    reporter.file_begin("m", "f", 10)
    reporter.file_end("m", "f", False, "boom")
    reporter.model_end("m", False)
    reporter.finish(["m"])
    kinds = [json.loads(line)["$type"] for line in out.getvalue().splitlines()]
    assert kinds == [
        "model_download_begin",
        "model_file_download_begin",
        "model_file_download_end",
        "model_download_end",
    ]
    assert err.getvalue() == "error: m: f: boom\n"


def test_a_file_that_is_an_html_page_is_not_rejected(http_server: FileServer, tmp_path: Path) -> None:  # fmt: skip
    page = b"<!DOCTYPE html><html><title>model card</title></html>"
    url = http_server.add("/card.html", page, content_type="text/html")
    model = write_model(tmp_path / "m", "with-card", [(FileSpec("docs/card.html", page), [url])])
    result = fetch_model(config_of(model), tmp_path / "o", DownloadOptions(settings=FAST))
    assert result.ok, result.files[0].error
    assert model.path_in(tmp_path / "o").read_bytes() == page


def test_force_that_fails_keeps_the_verified_file(http_server: FileServer, served_model, tmp_path: Path) -> None:  # fmt: skip
    model = served_model()
    config = config_of(model)
    assert fetch_model(config, tmp_path / "o", DownloadOptions(settings=FAST)).ok
    http_server.routes[f"/files/{model.name}.ckpt"].faults.append(
        Fault("status", times=-1, status=404)
    )
    forced = FetchSettings(force=True, retry=RetryPolicy(base=0.01))
    result = fetch_model(config, tmp_path / "o", DownloadOptions(settings=forced))
    assert not result.ok and "HTTP 404" in (result.files[0].error or "")
    assert model.path_in(tmp_path / "o").read_bytes() == model.data


def test_cache_that_cannot_be_locked_is_still_read(served_model, tmp_path: Path) -> None:
    model = served_model()
    config = config_of(model)
    options = DownloadOptions(cache_dir=tmp_path / "cache", settings=FAST)
    assert fetch_model(config, tmp_path / "o1", options).ok
    (tmp_path / "cache" / "1" / "locks").rmdir()
    (tmp_path / "cache" / "1" / "locks").write_text("not a folder: locks cannot be made here")
    out = io.StringIO()
    result = fetch_model(config, tmp_path / "o2", options, reporter=TextReporter(out=out))
    assert [f.outcome for f in result.files] == [Outcome.CACHE]
    assert "cannot lock the cache" in out.getvalue()
