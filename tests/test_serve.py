"""`dcvae serve`: the JSON API through Flask's test client, the command line, and the page in a headless Chromium."""
from __future__ import annotations

import argparse
import io
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import artifacts_folder, requires_mnist, tiny_mnist_config

pytest.importorskip("flask")

from dcvae.cli import serve as serve_cli  # noqa: E402
from dcvae.errors import UserError  # noqa: E402
from dcvae.latent import save_direction  # noqa: E402
from dcvae.serve import DEFAULT_HOST, build_state, create_app, make_server  # noqa: E402

pytestmark = requires_mnist

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from dcvae.training import train

    run = tmp_path_factory.mktemp("serve") / "run"
    train(tiny_mnist_config(**{"train.iterations": 1}), run, progress=False)
    return run


@pytest.fixture(scope="module")
def direction_file(run_dir: Path) -> Path:
    from dcvae.model import load

    model = load(run_dir)
    path = run_dir.parent / "thickness.safetensors"
    save_direction(path, torch.randn(model.latent_dim, generator=torch.Generator().manual_seed(0)) * 3,
                   "thickness", model.model_id, 20, 20)
    return path


@pytest.fixture(scope="module")
def client(run_dir: Path, direction_file: Path):
    state = build_state(run_dir, [str(direction_file)], examples=4, max_upload_bytes=20_000)
    return create_app(state).test_client()


def _png(size=(64, 48), mode="RGB") -> bytes:
    im = Image.new(mode, size)
    im.putdata([((x * 4) % 256, (y * 5) % 256, 128)[:len(mode)] if len(mode) > 1 else (x * 4) % 256
                for y in range(size[1]) for x in range(size[0])])
    buffer = io.BytesIO()
    im.save(buffer, format="PNG")
    return buffer.getvalue()


def _upload(client, data: bytes, name: str = "x.png"):
    return client.post("/api/reconstruct", data={"image": (io.BytesIO(data), name)},
                       content_type="multipart/form-data")


# -- HTTP --------------------------------------------------------------------------------------------------------------
def test_upload_is_converted_and_reconstructed(client):
    r = _upload(client, _png())
    assert r.status_code == 200, r.json
    body = r.json
    assert body["input"].startswith("data:image/png;base64,") and body["reconstruction"].startswith("data:image/png")
    assert len(body["latent"]) == 8
    assert all(word in body["conversion"] for word in ("64x48", "grayscale", "center-cropped"))
    # an image already 32x32 grayscale needs no conversion
    assert _upload(client, _png((32, 32), "L")).json["conversion"] is None


def test_oversized_upload_is_413_with_a_message(client):
    r = _upload(client, b"\0" * 50_000)
    assert r.status_code == 413
    assert "too large" in r.json["error"] and "MB" in r.json["error"]


def test_text_named_png_is_not_an_image(client):
    r = _upload(client, b"hello, I am plain text\n" * 10, "fake.png")
    assert r.status_code == 400
    assert "not an image" in r.json["error"]


def test_other_image_types_are_refused_by_content(client):
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="TIFF")
    r = _upload(client, buffer.getvalue(), "looks.png")
    assert r.status_code == 415 and "TIFF" in r.json["error"]


def test_bad_json_requests_are_4xx_not_crashes(client):
    ok = client.post("/api/reconstruct", json={"example": 0}).json["latent"]
    for path, payload in [("/api/interpolate", {"a": ok, "b": ok, "t": 2}),
                          ("/api/interpolate", {"a": ok[:3], "b": ok, "t": 0.5}),
                          ("/api/interpolate", {"a": ok, "b": [float("nan")] * 8, "t": 0.5}),
                          ("/api/edit", {"latent": ok, "strengths": [1, 2]}),
                          ("/api/reconstruct", {"example": 99})]:
        r = client.post(path, json=payload)
        assert r.status_code == 400 and r.json["error"], (path, payload)
    assert client.post("/api/interpolate", data="{not json", content_type="application/json").status_code == 400
    assert client.get("/api/samples?n=0").status_code == 400
    assert client.get("/api/samples?seed=abc").status_code == 400
    assert client.get("/api/nothing").status_code == 404


def test_interpolate_edit_samples(client):
    a = client.post("/api/reconstruct", json={"example": 0}).json["latent"]
    b = client.post("/api/reconstruct", json={"example": 1}).json["latent"]
    ends = [client.post("/api/interpolate", json={"a": a, "b": b, "t": t}).json["image"] for t in (0, 1)]
    assert ends[0] != ends[1]
    assert client.get("/api/directions").json["directions"][0]["name"] == "thickness"
    edits = [client.post("/api/edit", json={"latent": a, "strengths": [s]}).json["image"] for s in (0, 3)]
    assert edits[0] != edits[1]
    one = client.get("/api/samples?n=4&seed=7").json
    assert len(one["images"]) == 4 and one["seed"] == 7
    assert client.get("/api/samples?n=4&seed=7").json["images"] == one["images"]
    assert client.get("/").status_code == 200


def test_direction_of_another_model_is_refused_at_startup(run_dir, tmp_path):
    other = tmp_path / "other.safetensors"
    save_direction(other, torch.ones(8), "smile", "f" * 64, 20, 20)
    with pytest.raises(UserError, match="another model"):
        build_state(run_dir, [str(other)])
    args = _parse(["serve", str(run_dir), "--direction", str(other), "--port", "0"])
    with pytest.raises(UserError, match="compute it again with this checkpoint"):
        args.func(args)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve_cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_default_host_is_loopback(run_dir):
    args = _parse(["serve", str(run_dir)])
    assert args.host == DEFAULT_HOST == "127.0.0.1" and args.port == 8000
    assert _parse(["serve", str(run_dir), "--host", "0.0.0.0"]).host == "0.0.0.0"
    with pytest.raises(UserError, match="--port"):
        (a := _parse(["serve", str(run_dir), "--port", "70000"])).func(a)


# -- the page in a real browser ----------------------------------------------------------------------------------------
@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver): "
                           "apt-get install -y chromium chromium-driver")
def test_page_in_headless_chromium(run_dir, direction_file, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    server = make_server(build_state(run_dir, [str(direction_file)], examples=4), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={tmp_path / 'chrome-profile'}", "--window-size=1100,1400"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        wait = WebDriverWait(driver, 20)
        driver.get(f"http://127.0.0.1:{server.server_port}/")
        src = lambda element_id: driver.find_element(By.ID, element_id).get_attribute("src") or ""  # noqa: E731
        # the page starts on the examples: first one reconstructed, first two as the interpolation's ends
        wait.until(lambda d: src("interp-img").startswith("data:image/png"))
        assert len(driver.find_elements(By.CSS_SELECTOR, "#examples img")) == 4

        image = tmp_path / "upload.png"
        image.write_bytes(_png())
        before = src("recon-img")
        driver.find_element(By.ID, "file-input").send_keys(str(image))
        wait.until(lambda d: src("recon-img").startswith("data:image/png") and src("recon-img") != before)
        assert "64x48" in driver.find_element(By.ID, "conversion").text
        assert driver.find_element(By.ID, "message").text == ""

        driver.find_element(By.ID, "use-b").click()
        wait.until(lambda d: src("slot-b") == src("input-img"))
        slider = driver.find_element(By.ID, "interp-slider")
        slider.send_keys(Keys.HOME)
        wait.until(lambda d: driver.find_element(By.ID, "interp-t").text == "0.00")
        time.sleep(0.3)   # let the t=0 answer land
        at_start = src("interp-img")
        slider.send_keys(Keys.END)
        wait.until(lambda d: driver.find_element(By.ID, "interp-t").text == "1.00" and src("interp-img") != at_start)

        strength = driver.find_element(By.ID, "strength-0")
        edited = src("edit-img")
        strength.send_keys(Keys.END)
        wait.until(lambda d: src("edit-img") != edited)

        # read in one script call: the grid is replaced while Python would walk it element by element
        samples = lambda: driver.execute_script(  # noqa: E731
            "return Array.from(document.querySelectorAll('#samples img'), img => img.src)")
        wait.until(lambda d: len(samples()) == 16)
        first_samples = samples()
        driver.find_element(By.ID, "samples-btn").click()
        wait.until(lambda d: len(samples()) == 16 and samples() != first_samples)

        # a refused upload is shown in the page, and the page keeps working
        bad = tmp_path / "notes.png"
        bad.write_text("not an image at all\n")
        driver.find_element(By.ID, "file-input").send_keys(str(bad))
        wait.until(lambda d: "not an image" in d.find_element(By.ID, "message").text)

        # Kept after the run (git ignores it): what a person would have seen.
        shot = artifacts_folder() / "serve.png"
        assert driver.save_screenshot(str(shot))
        print(f"screenshot: {shot}")
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
